"""schema/libvirt-cpu-since.json: the first libvirt release whose CPU map has each model.

The shipped table is derived by tests/derive_libvirt_cpu_since.py from released CPU maps
(its `inputs` say which). Here: the derivation itself on a small libvirt-shaped git
history made in the test, and the table against two of the releases it was derived from,
as real packages have them: the installed libvirt (11.3 from backports in CI) and Debian
12's own libvirt 9.0 (unpacked by .ci/run). Re-deriving the whole table needs all its
inputs or a libvirt git mirror: `derive_libvirt_cpu_since.py --check` does that.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
from conftest import missing
from derive_libvirt_cpu_since import SOURCE, derive, dumps, from_git, from_releases
from helpers import EXAMPLES, ROOT, compile_plan, rel

SHIPPED = os.path.join(ROOT, "schema", "libvirt-cpu-since.json")


def vt(text):
    return tuple(int(x) for x in text.split("."))


@pytest.fixture(scope="module")
def table():
    with open(SHIPPED, encoding="utf-8") as fh:
        return json.load(fh)


def test_the_table_says_where_it_comes_from(table):
    assert table["releases"] == sorted(table["releases"], key=vt)
    assert sorted(i["version"] for i in table["inputs"]) == sorted(table["releases"])
    assert all(i["from"] for i in table["inputs"])


# -- the derivation, on a libvirt-shaped history made here -----------------------------------

OLD_MAP = """<cpus>
  <arch name='x86'>
    <model name='486'/>
    <model name='Opteron_G1'><vendor name='AMD'/></model>
    <model name='Opteron_G2'><model name='Opteron_G1'/></model>
  </arch>
  <arch name='ppc64'><model name='POWER8'/></arch>
</cpus>
"""


def _split(models):
    """A 4.7-style src/cpu_map: index.xml including one file per model."""
    files = {"index.xml": "<cpus>\n<arch name='x86'>\n<include filename='x86_vendors.xml'/>\n"
             + "".join(f"<group name='g'><include filename='x86_{f}.xml'/></group>\n"
                       for f, _n in models) + "</arch>\n</cpus>\n",
             "x86_vendors.xml": "<cpus><vendor name='AMD' string='AuthenticAMD'/></cpus>\n"}
    for f, name in models:
        files[f"x86_{f}.xml"] = f"<cpus><model name='{name}'><vendor name='AMD'/></model></cpus>\n"
    return files


HISTORY = [   # tag -> files under src/ (the release tags; v5.0.0-rc1 is no release)
    ("v4.6.0", {"cpu/cpu_map.xml": OLD_MAP}),
    ("v4.7.0", {f"cpu_map/{k}": v for k, v in _split(
        [("486", "486"), ("Opteron_G1", "Opteron_G1"), ("Opteron_G2", "Opteron_G2")]).items()}),
    ("v5.0.0-rc1", {f"cpu_map/{k}": v for k, v in _split(
        [("486", "486"), ("Opteron_G1", "Opteron_G1"), ("Opteron_G2", "Opteron_G2"),
         ("Early", "Early")]).items()}),
    ("v5.0.0", {f"cpu_map/{k}": v for k, v in _split(
        [("486", "486"), ("Opteron_G1", "Opteron_G1"), ("Opteron_G2", "Opteron_G2"),
         ("EPYC", "EPYC"), ("Early", "Early"), ("FT-2000plus", "FT-2000+")]).items()}),
]


@pytest.fixture(scope="module")
def fake_libvirt(tmp_path_factory, tool):
    git = tool("git")
    work = tmp_path_factory.mktemp("libvirt")
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")

    def run(*args):
        subprocess.run([git, "-C", str(work)] + list(args), check=True, env=env,
                       capture_output=True)
    run("init", "-q")
    for tag, files in HISTORY:
        if (work / "src").exists():
            shutil.rmtree(work / "src")
        for path, text in files.items():
            (work / "src" / path).parent.mkdir(parents=True, exist_ok=True)
            (work / "src" / path).write_text(text)
        run("add", "-A")
        run("commit", "-q", "-m", tag)
        run("tag", tag)
    return str(work / ".git")


def test_git_derivation_dates_each_model_by_its_first_release_tag(fake_libvirt):
    got = derive(*from_git(fake_libvirt), SOURCE)
    assert got["releases"] == ["4.6.0", "4.7.0", "5.0.0"]     # no -rc tag
    x86 = got["arches"]["x86"]
    assert x86["Opteron_G2"] == {"since": "4.6.0", "absent-in": None}   # the single-file map
    assert x86["EPYC"] == {"since": "5.0.0", "absent-in": "4.7.0"}
    assert x86["Early"]["since"] == "5.0.0"   # an -rc tag is no release
    assert "FT-2000+" in x86 and "FT-2000plus" not in x86   # the name is the file's model
    assert "AMD" not in x86                     # vendors are no models
    assert got["arches"]["ppc64"] == {"POWER8": {"since": "4.6.0", "absent-in": None}}


def test_fewer_releases_give_bounds_not_a_date(fake_libvirt, tmp_path):
    """Negative control for the release-directory input: without 4.7.0 EPYC is only known
    to be absent from 4.6.0."""
    releases = [r for r in from_git(fake_libvirt)[0] if r[0] != "4.7.0"]
    assert derive(releases, [], SOURCE)["arches"]["x86"]["EPYC"] == \
        {"since": "5.0.0", "absent-in": "4.6.0"}


def test_release_directories_derive_like_the_tags(fake_libvirt, tmp_path):
    for tag, files in HISTORY:
        if "-rc" in tag:
            continue
        d = tmp_path / tag[1:]
        d.mkdir()
        for path, text in files.items():
            (d / os.path.basename(path)).write_text(text)
    (tmp_path / "inputs.json").write_text('[{"version": "4.6.0", "from": "x"}]')
    releases, inputs = from_releases(str(tmp_path))
    assert inputs == [{"version": "4.6.0", "from": "x"}]
    assert derive(releases, [], SOURCE)["arches"] == derive(*from_git(fake_libvirt), SOURCE)["arches"]


# -- the installed libvirt and cgsc's examples -------------------------------------------------

LIBVIRT_9_0_PREFIX = "/opt/cgsc/libvirt-9.0"   # .ci/run unpacks Debian 12's libvirt0 here


def _installed(tool):
    out = subprocess.run([tool("virsh"), "--version"], capture_output=True, text=True)
    return out.stdout.strip(), "/usr/share/libvirt/cpu_map"


def _debian_12(tool):
    prefix = os.environ.get("CGSC_LIBVIRT_9_0", LIBVIRT_9_0_PREFIX)
    return "9.0.0", os.path.join(prefix, "usr", "share", "libvirt", "cpu_map")


@pytest.mark.parametrize("release", [_installed, _debian_12], ids=["installed", "debian-12"])
def test_a_released_cpu_map_agrees_with_the_table(table, tool, release):
    """Real libvirt CPU maps: every model a release has is dated no later than it, and
    every model the table says a later release added is absent from it."""
    version, cpu_map = release(tool)
    if not os.path.isfile(os.path.join(cpu_map, "index.xml")):
        missing(f"libvirt {version}'s CPU map is not at {cpu_map} (run .ci/run, or set "
                "CGSC_LIBVIRT_9_0 to an unpacked Debian 12 libvirt0)")

    def read(name):
        path = os.path.join(cpu_map, name)
        return open(path, "rb").read() if os.path.isfile(path) else None
    from derive_libvirt_cpu_since import models
    here = models(read)
    assert here.get("x86"), cpu_map
    for arch, entries in table["arches"].items():
        for model, entry in entries.items():
            if vt(entry["since"]) <= vt(version):
                assert model in here.get(arch, ()), (arch, model, version)
            elif entry["absent-in"] and vt(version) <= vt(entry["absent-in"]):
                assert model not in here.get(arch, ()), (arch, model, version)
    if vt(version) <= vt(table["releases"][-1]):
        for arch, names in here.items():
            assert names <= set(table["arches"][arch]), (arch, version)


def test_every_cpu_model_an_example_names_is_in_the_table(table):
    glob_specs = EXAMPLES + [os.path.join(ROOT, "examples", "kubevirt", f)
                             for f in sorted(os.listdir(os.path.join(ROOT, "examples", "kubevirt")))]
    used = {}
    for spec in glob_specs:
        plan = compile_plan(spec)
        if plan.arch == "x86_64" and plan.cpu not in ("host", "max"):
            used[plan.cpu] = rel(spec)
    assert used, "the examples name CPU models"
    for model, spec in used.items():
        assert model in table["arches"]["x86"], (model, spec)
        assert re.fullmatch(r"\d+\.\d+\.\d+", table["arches"]["x86"][model]["since"])
