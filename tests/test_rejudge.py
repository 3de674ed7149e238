"""``factorflow judge DIR`` (runner.rejudge): a finished result's claims judged again from its
stored rows, without a rerun."""

from __future__ import annotations

import html
import json

from factorflow.cli import main
from factorflow.runner import rejudge, run_experiment


def test_rejudge_restores_the_verdicts_from_the_rows_and_says_what_changed(tmp_path, capsys):
    out = tmp_path / "r"
    first = run_experiment("razin2020-perturbed", out, scale="smoke", log=lambda m: None)
    judged = [c for c in first["claims"] if c["holds"] is not None]
    assert judged, "the smoke run judges some claims"
    # a summary whose verdict is stale (as after a fix to how a claim is measured)
    stale = json.loads((out / "summary.json").read_text())
    target = next(c for c in stale["claims"] if c["id"] == judged[0]["id"])
    target["holds"] = not target["holds"]
    (out / "summary.json").write_text(json.dumps(stale))
    again = rejudge(out)
    assert again["claims"] == first["claims"]
    assert again["rows"] == first["rows"]  # the rows are read, never recomputed
    assert again["rejudged"]["changed"] == [
        {"id": target["id"], "was": target["holds"], "now": judged[0]["holds"]}
    ]
    assert again["rejudged"]["git_commit"] == again["meta"]["git_commit"]
    assert json.loads((out / "summary.json").read_text())["claims"] == first["claims"]
    assert main(["judge", str(out)]) == 0
    assert (
        f"{out}: {len(first['claims'])} claims judged again; none changed"
        in capsys.readouterr().out
    )


def test_a_talk_resumed_after_judge_reports_the_new_verdicts_and_says_so(tmp_path):
    from factorflow.talk import reproduce_talk

    reproduce_talk(tmp_path, scale="smoke", only=["razin2020-perturbed"], log=None)
    result = tmp_path / "razin2020-perturbed"
    summary = json.loads((result / "summary.json").read_text())
    claim = next(c for c in summary["claims"] if c["holds"] is not None)
    claim["holds"] = not claim["holds"]  # stale, as before a measurement fix
    (result / "summary.json").write_text(json.dumps(summary))
    stale = reproduce_talk(
        tmp_path, scale="smoke", only=["razin2020-perturbed"], resume=True, log=None
    )
    rejudge(result)
    fixed = reproduce_talk(
        tmp_path, scale="smoke", only=["razin2020-perturbed"], resume=True, log=None
    )
    assert fixed["experiments"]["razin2020-perturbed"]["kept"]  # not rerun
    assert fixed["claims"] != stale["claims"]  # the index counts the new verdicts
    label = {True: "holds", False: "fails"}
    change = f"{claim['id']}: {label[claim['holds']]} -> {label[not claim['holds']]}"
    for name, shown in (("report.md", change), ("report.html", html.escape(change))):
        text = (tmp_path / name).read_text()
        assert "Claims judged again from the stored rows" in text and shown in text
