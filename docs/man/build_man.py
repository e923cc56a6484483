"""Build the roff man pages from their Markdown sources (docs/man/*.8.md): `make man`.

The sources use a small Markdown subset, one construct per line:
- first line `% NAME(SECTION) | manual title`
- `# HEADING` (a .SH), `## Heading` (a .SS)
- paragraphs; `- item` (a bullet); `` `term` `` on a line followed by `: text` lines (a .TP)
- fenced code blocks (```) kept as they are
- inline `` `code` `` (bold) and `*word*` (italic)
- `@ADMIN_SYNOPSIS@` and `@ADMIN_COMMANDS@`: generated from dmuc-admin's argparse parser,
  so that its page cannot drift from the command.
- `@MASTER_CONFIGURATION@` and `@SLAVE_CONFIGURATION@`: every key of the daemon's TOML
  file, from dmuc/config_reference.py (which the configuration loader uses too).

`python docs/man/build_man.py` writes docs/man/NAME.8 beside each source; `--check` only
compares (exit 1 if a page is out of date).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the checkout, for dmuc.admin.cli

from dmuc.admin.cli import build_parser  # noqa: E402
from dmuc.config_reference import MASTER, SLAVE, Key  # noqa: E402

DATE = "2026-12-02"  # fixed, so that a rebuild is byte-identical
VERSION = "dmuc 0.1.0"


def escape(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return re.sub(r"^([.'])", r"\\&\1", text)


def inline(text: str) -> str:
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append("\\fB" + escape(part[1:-1]) + "\\fR")
        else:
            out.append(re.sub(r"\*([^*\s][^*]*)\*", r"\\fI\1\\fR", escape(part)))
    return "".join(out)


def _argument_text(action: argparse.Action) -> str:
    if action.option_strings:
        name = ", ".join(action.option_strings)
        return f"{name} {action.metavar}" if action.nargs != 0 and action.metavar else name
    return str(action.metavar or action.dest)


def _usage(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_usage().split())[len("usage: "):]


def admin_sections() -> dict[str, list[str]]:
    """The SYNOPSIS and COMMANDS of dmuc-admin, from its parser."""
    parser = build_parser()
    commands = next(a for a in parser._actions
                    if isinstance(a, argparse._SubParsersAction))
    synopsis = ["`dmuc-admin` [`-c` *FILE*] [`--storage` *URL*] [`--service` *JID*] "
                "*COMMAND* ...", ""]
    for sub in commands.choices.values():
        synopsis += [f"`{_usage(sub)}`", ""]
    body: list[str] = []
    for name, sub in commands.choices.items():
        body += [f"## {name}", "", sub.description or "", ""]
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            body += [f"`{_argument_text(action)}`", f": {action.help or ''}", ""]
    return {"@ADMIN_SYNOPSIS@": synopsis, "@ADMIN_COMMANDS@": body}


def configuration(reference: tuple[Key, ...]) -> list[str]:
    """One subsection per table, one tagged paragraph per key, in the reference's order."""
    lines: list[str] = []
    table = None
    for key in reference:
        if key.table != table:
            table = key.table
            shown = f"[[{table}]]" if "[]" in key.name else f"[{table}]"
            lines += [f"## {shown}", ""]
        when = "A reload (SIGHUP) applies a change." if key.reloads else \
            "A change waits for a restart."
        lines += [f"`{key.key}` (*{key.kind}*; default `{key.default}`)",
                  f": {key.text} {when}", ""]
    return lines


def generated_sections(lines: list[str]) -> dict[str, list[str]]:
    wanted = {line.strip() for line in lines}
    sections: dict[str, list[str]] = {}
    if wanted & {"@ADMIN_SYNOPSIS@", "@ADMIN_COMMANDS@"}:
        sections.update(admin_sections())
    sections["@MASTER_CONFIGURATION@"] = configuration(MASTER)
    sections["@SLAVE_CONFIGURATION@"] = configuration(SLAVE)
    # SIGNALS, EXIT STATUS and ENVIRONMENT, the same for both daemons
    sections["@DAEMON_OPERATION@"] = (HERE / "daemon.md.inc").read_text().splitlines()
    return sections


def render(source: str) -> str:
    lines = source.splitlines()
    head = re.match(r"% (\S+)\((\d)\) \| (.+)", lines[0])
    if head is None:
        raise SystemExit("the first line must be '% NAME(SECTION) | title'")
    name, section, title = head.groups()
    expanded: list[str] = []
    generated = generated_sections(lines)
    for line in lines[1:]:
        expanded.extend(part.replace("@NAME@", name)
                        for part in generated.get(line.strip(), [line]))
    out = [f'.TH "{name.upper()}" "{section}" "{DATE}" "{VERSION}" "{title}"']
    in_code = False
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            out.append(".PP")
            out.extend(inline(p) for p in paragraph)
            paragraph.clear()

    i = 0
    while i < len(expanded):
        line = expanded[i]
        if line.startswith("```"):
            flush()
            out.append(".RS 4\n.nf" if not in_code else ".fi\n.RE")
            in_code = not in_code
        elif in_code:
            out.append(escape(line) if line else "")
        elif line.startswith("## "):
            flush()
            out.append(f'.SS "{escape(line[3:])}"')
        elif line.startswith("# "):
            flush()
            out.append(f".SH {escape(line[2:].upper())}")
        elif line.startswith("- "):
            flush()
            out.append(".IP \\(bu 2")
            out.append(inline(line[2:]))
        elif i + 1 < len(expanded) and expanded[i + 1].startswith(": ") and line.strip():
            flush()
            out.append(".TP")
            out.append(inline(line))
            i += 1
            while i < len(expanded) and expanded[i].startswith(": "):
                out.append(inline(expanded[i][2:]))
                i += 1
            continue
        elif not line.strip():
            flush()
        else:
            paragraph.append(line.strip())
        i += 1
    flush()
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only check that the built pages are up to date")
    args = parser.parse_args()
    stale = []
    for source in sorted(HERE.glob("*.8.md")):
        page = source.with_suffix("")  # NAME.8
        text = render(source.read_text())
        if args.check:
            if not page.exists() or page.read_text() != text:
                stale.append(page.name)
        else:
            page.write_text(text)
    if stale:
        print(f"out of date (run make man): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
