"""What `cgsc COMMAND --help` shows below the options: examples a user can paste, and where
to read on. Kept apart from the parser so cli.py stays the thin shell."""

from __future__ import annotations

DOCS = "docs/ in the cgsc repository (README.md links each guide)"

EPILOGS = {
    None: """\
examples:
  cgsc init --mechanism sev-snp payments-db    write payments-db.toml, a commented spec
  cgsc validate payments-db.toml               check it, write nothing
  cgsc build payments-db.toml                  write out/payments-db/
  cgsc explain RULE-ID                         why a rule exists and how to fix it

exit status: 0 success, 1 invalid spec (or drift, for check), 2 usage or environment,
3 internal error (a bug: please report it). Docs: """ + DOCS,
    "build": """\
examples:
  cgsc build guest.toml                        out/<name>/: <name>.sh, .service, .xml, manifest.json
  cgsc build guests/*.toml -o out              a fleet, every core from 48 specs on
  cgsc build guest.toml -t shell --stdout      only the launch script, on stdout
  cgsc build guest.toml --host debian-12-backports
                                               check against a host and pin the machine type

Nothing is written unless every spec builds. See docs/getting-started.md.""",
    "validate": """\
examples:
  cgsc validate guest.toml                     everything build checks, nothing written
  cgsc validate guests/*.toml --format github  annotations for a pull request
  cgsc validate --base guests/bases/*.toml     fleet bases: keys and values only
  cgsc validate --host host.json guest.toml    can that host run it?

See docs/reference/rules.md for every rule.""",
    "check": """\
examples:
  cgsc check guests/*.toml -o out              exit 1 with a diff when out/ is stale
  cgsc check --all -o out                      also every guest under out/ and anything else there

Never writes. See docs/fleets.md (CI gates).""",
    "explain": """\
examples:
  cgsc explain guest.toml                      every launch-security value and its source
  cgsc explain guest.toml --format json        the same, typed, for scripts
  cgsc explain CGS-SNP-010                     a rule: why, how to fix, reference""",
    "diff": """\
examples:
  cgsc diff old.toml new.toml                  what a change does, in words
  cgsc diff --base origin/main guests/*.toml --format markdown
                                               a pull-request comment

A report, not a gate: exit 0. See docs/fleets.md.""",
    "verify": """\
examples:
  cgsc verify report.bin --guest out/payments-db     a raw SEV-SNP report or TDX quote
  cgsc verify quote.dat --manifest manifest.json --format json

Values only, not signatures: the reference values cgsc writes for go-sev-guest, go-tdx-guest
and Trustee check those. See docs/attestation.md.""",
    "rules": """\
examples:
  cgsc rules                                   every rule, one a line
  cgsc rules CGS-SNP-010                       one rule in full (as cgsc explain CGS-SNP-010)
  cgsc rules --format json                     the catalogue for tools

The catalogue with every rule in full: docs/reference/rules.md.""",
    "schema": """\
examples:
  cgsc schema > cgsc.schema.json               for editors (Taplo, Even Better TOML)
  cgsc schema --base > cgsc.base.schema.json   for fleet bases
  cgsc schema --attestation                    manifest.json's attestation object

Every key in prose: docs/reference/keys.md.""",
    "targets": """\
examples:
  cgsc targets                                 the installed targets
  cgsc targets --format json                   the same, for tools

Third-party targets register in the cgsc.targets entry-point group: docs/api.md.""",
    "probe": """\
examples:
  cgsc probe -o host.json                      describe this host (any user; unknown stays null)
  virsh domcapabilities > caps.xml && cgsc probe --from-domcapabilities caps.xml -o host.json
  cgsc build --host host.json guest.toml       use it

See docs/operators.md.""",
    "completion": """\
examples:
  cgsc completion bash > /etc/bash_completion.d/cgsc
  cgsc completion zsh > "${fpath[1]}/_cgsc"
  cgsc completion fish > ~/.config/fish/completions/cgsc.fish""",
    "init": """\
examples:
  cgsc init --mechanism sev-snp payments-db    payments-db.toml, valid and commented
  cgsc init --mechanism tdx -o guests/ledger.toml ledger

Refuses to overwrite a file. Then: cgsc validate FILE. See docs/getting-started.md.""",
}
