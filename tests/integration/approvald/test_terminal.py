"""Terminal safety: arguments, a question, an action and a comment holding ESC, CSI, C1,
bidi controls and line breaks are shown escaped by list and show (nothing a terminal would
act on reaches it), and exactly by --json."""

import re

from ahptest import check, run_test
from apprlib import Approvald, approvald_built

EVIL = "\x1b[31mred\x1b[0m \u202eevil\u202c\nline2\r\x9b2J\x07"
ARGS = {"content": EVIL, "webhook_id": "t\x1b]0;title\x07"}
ACTION = "publish\x1b[2Jsummary"
# What a terminal must never receive: C0 controls but \n, DEL, C1, bidi and separators.
BAD = re.compile("[\x00-\x09\x0b-\x1f\x7f\x80-\x9f\u200e\u200f\u061c\u202a-\u202e"
                 "\u2066-\u2069\u2028\u2029\ufeff]")


def main(args):
    if not approvald_built(args):
        return 77
    with Approvald(args, "term") as ap:
        ap.start()
        ap.created("r-t1", 1, action=ACTION, args=ARGS)
        ap.created("r-t1", 2, action="ask_human", kind="KIND_QUESTION",
                   question="Proceed?\x1b[8m hidden \u2067x\n#9  pending  fake line")
        p = ap.cli("list", expect=0)
        lines = p.stdout.split("\n")
        check(len(lines) == 3 and lines[2] == "", f"list lines: {lines!r}")
        for line in lines:
            check(not BAD.search(line), f"control in list: {line!r}")
        check(lines[0].startswith('#2  pending  ask_human: "Proceed?\\x1b[8m hidden \\u{2067}'
                                  'x\\x0a#9  pending  fake line"  run r-t1  step 2'),
              f"question line: {lines[0]!r}")
        check(lines[1].startswith('#1  pending  publish\\x1b[2Jsummary(content="\\x1b[31mred'
                                  '\\x1b[0m \\u{202e}evil\\u{202c}\\x0aline2\\x0d\\xc2\\x9b2J'),
              f"call line: {lines[1]!r}")
        check('webhook_id="t\\x1b]0;title\\x07")  run r-t1  step 1' in lines[1], lines[1])
        p = ap.cli("show", "1", expect=0)
        for line in p.stdout.splitlines():
            check(not BAD.search(line), f"control in show: {line!r}")
        check("action     publish\\x1b[2Jsummary\n" in p.stdout, p.stdout)
        check('    "content": "\\u001B[31mred\\u001B[0m \\u{202e}evil\\u{202c}\\nline2\\r'
              '\\xc2\\x9b2J\\u0007",' in p.stdout, f"show arguments:\n{p.stdout}")
        p = ap.cli("show", "2", expect=0)
        check("question   Proceed?\\x1b[8m hidden \\u{2067}x\\x0a#9  pending  fake line\n"
              in p.stdout, p.stdout)
        p = ap.cli("answer", "2", "ok\x1b[2J\u202e", expect=0)
        p = ap.cli("show", "2", expect=0)
        check(p.stdout.endswith("answer     ok\\x1b[2J\\u{202e}\n"), p.stdout)

        # --json: the exact text.
        j = ap.cli_json("show", "1")
        check(j["action"] == ACTION and j["arguments_json"] ==
              ap.get("r-t1", 1)["request"]["arguments_json"], f"json: {j}")
        import json
        check(json.loads(j["arguments_json"]) == ARGS, f"arguments: {j['arguments_json']!r}")
        j = ap.cli_json("list", "--all")
        check(j["requests"][0]["decision"]["comment"] == "ok\x1b[2J\u202e", f"{j}")
    return 0


run_test(main)
