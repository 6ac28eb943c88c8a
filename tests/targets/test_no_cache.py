"""No code from caches (issue 12): compiled templates ship with the package, checked
against the template source; nothing under a cache directory is ever read."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
from helpers import EXAMPLES, ROOT

from cgsc.targets import compiled_templates, render, template_compiler

# Plants a Jinja2 bytecode cache entry (the format jinja2.FileSystemBytecodeCache reads,
# with the right checksum) for every template, whose code creates a marker file; then
# runs cgsc under an audit hook that records every path it opens or lists.
AUDITED = r"""
import os, sys
caches = sys.argv[1].split(os.pathsep)
log = sys.argv[2]
seen = []
def hook(event, args):
    if event in ("open", "os.listdir", "os.scandir", "os.stat") and args:
        path = args[0]
        if isinstance(path, bytes):
            path = path.decode("utf-8", "replace")
        if isinstance(path, str):
            seen.append(os.path.abspath(path))
sys.addaudithook(hook)
from cgsc.cli import main
code = main(sys.argv[3:])
with open(log, "w") as fh:
    fh.write("\n".join(p for p in seen if any(p.startswith(c) for c in caches)))
sys.exit(code)
"""


def _plant(cache_dir: str, marker: str) -> None:
    import jinja2
    from jinja2.bccache import Bucket
    env = jinja2.Environment()
    payload = compile(f"open({marker!r}, 'w').write('cache code ran')", "<planted>", "exec")
    for sub in ("", "cgsc", os.path.join("cgsc", "templates-1.0.0")):
        directory = os.path.join(cache_dir, sub)
        os.makedirs(directory, exist_ok=True)
        for name in compiled_templates.TEMPLATES:
            path = os.path.join(ROOT, "targets", "templates", name)
            source = open(path, encoding="utf-8").read()
            for key_text in (name, f"{name}|{path}"):
                key = hashlib.sha1(key_text.encode("utf-8")).hexdigest()
                bucket = Bucket(env, key, hashlib.sha1(source.encode("utf-8")).hexdigest())
                bucket.code = payload
                with open(os.path.join(directory, f"__jinja2_{key}.cache"), "wb") as fh:
                    bucket.write_bytecode(fh)


@pytest.mark.parametrize("command", ["build", "check"])
def test_a_planted_bytecode_cache_is_never_read(tmp_path, command):
    home, xdg = tmp_path / "home", tmp_path / "xdg"
    marker = tmp_path / "pwned"
    _plant(str(home / ".cache"), str(marker))
    _plant(str(xdg), str(marker))
    log = tmp_path / "opened"
    before_home = sorted(p for p in home.rglob("*"))
    out = tmp_path / "out"
    env = dict(os.environ, HOME=str(home), XDG_CACHE_HOME=str(xdg))
    argv = [command, EXAMPLES[0], "-o", str(out)]
    if command == "check":
        subprocess.run([sys.executable, "-m", "cgsc", "build", EXAMPLES[0], "-o", str(out)],
                       env=env, check=True, capture_output=True)
    result = subprocess.run([sys.executable, "-c", AUDITED, os.pathsep.join([str(home), str(xdg)]),
                             str(log), *argv], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    assert log.read_text() == ""      # not one path under either cache directory touched
    assert sorted(p for p in home.rglob("*")) == before_home    # nothing written there


def test_the_shipped_compiled_templates_match_their_sources():
    """Run `python -m cgsc.regenerate` after editing a template."""
    env = render.environment()
    for name in compiled_templates.TEMPLATES:
        path = os.path.join(os.path.dirname(compiled_templates.__file__), "_generated",
                            compiled_templates.module_name(name) + ".py")
        with open(path, encoding="utf-8") as fh:
            assert fh.read() == template_compiler.generate(env, name), f"{path} is stale"


def test_compiled_and_source_templates_render_alike():
    env = render.environment()
    for name in compiled_templates.TEMPLATES:
        shipped = render.template(name)
        assert shipped.filename.endswith(compiled_templates.module_name(name) + ".py")
        fresh = env.from_string(compiled_templates.source_of(name))
        # the same output for every example's plan (derived from the source template)
        from helpers import compile_plan
        for spec in EXAMPLES:
            plan = compile_plan(spec)
            shell_ctx = _context(name, plan)
            if shell_ctx is not None:
                assert shipped.render(**shell_ctx) == fresh.render(**shell_ctx)


def _context(name, plan):
    """The keyword arguments the target passes, captured from its own call."""
    captured = {}
    real = render.template(name).render

    class Spy:
        def render(self, **kw):
            captured.update(kw)
            return real(**kw)
    from cgsc.targets import shell, systemd
    module = shell if name == "launch.sh.j2" else systemd
    original = module.template
    module.template = lambda _n: Spy()
    try:
        target = module.TARGET
        if target.unsupported(plan) is not None:
            return None
        target.render(plan)
    finally:
        module.template = original
    return captured


def test_a_stale_compiled_template_is_never_used(monkeypatch):
    env = render.environment()
    name = "launch.sh.j2"
    real = compiled_templates.source_of
    monkeypatch.setattr(compiled_templates, "source_of",
                        lambda n: real(n) + "# edited after compiling\n")
    t = compiled_templates.load(env, name)
    assert t.filename.endswith(os.path.join("templates", name))
    assert "# edited after compiling" in t.render(**_stub_context(t))


def _stub_context(t):
    """Whatever the template needs: captured from a real render of the first example."""
    from helpers import compile_plan
    return _context("launch.sh.j2", compile_plan(EXAMPLES[0]))
