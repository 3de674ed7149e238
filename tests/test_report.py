"""`reproduce talk` and its report, end to end on fake registered experiments."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

import pytest

from factorflow import experiments, plotting
from factorflow.cli import main
from factorflow.experiment import Claim, Experiment, NotJudged, at_least, at_most
from factorflow.report import totals, write_report
from factorflow.talk import TALK, reproduce_talk

RECEIVED: list[dict] = []


@dataclass(frozen=True)
class FakeSettings:
    seeds: int = 2
    shape: tuple[int, int] = (6, 6)
    data_source: str = "synthetic rank-1"
    depth: int = 3


def _claim(exp_id: str, j: int, h: bool | None) -> Claim:
    def measure(result):
        if h is None:
            raise NotJudged("the fake cannot judge it")
        return 0.123 + j

    check = at_most(None, 10.0) if h else at_least(None, 10.0)
    return Claim(
        f"{exp_id}-c{j}",
        f"claim {j} of {exp_id}",
        0.5,
        "Fake et al. 2019, Fig. 1",
        measure,
        (check,),
    )


def _fake(exp_id: str, *, fail: BaseException | None = None, holds=(True, False, None), sleep=0.0):
    """A registered experiment of the real shape: rows with seeds, claims with the given
    outcomes (True holds, False fails, None not judged), one figure (see ``_draw``)."""

    def run(s: FakeSettings, ctx) -> list[dict]:
        RECEIVED.append(
            {
                "id": exp_id,
                "scale": ctx.scale,
                "seeds": s.seeds,
                "device": str(ctx.device),
                "workers": ctx.workers,
            }
        )
        time.sleep(sleep)
        if fail is not None:
            raise fail
        return [{"method": "dmf", "seed": k, "recon_mse": 1e-5 * (k + 1)} for k in range(s.seeds)]

    preset = FakeSettings(data_source=f"synthetic rank-1 ({exp_id})")
    return Experiment(
        id=exp_id,
        title=f"Fake {exp_id}",
        paper="Fake et al. 2019",
        settings=FakeSettings,
        scales={"quick": preset, "paper": preset, "smoke": preset},
        columns={"method": "str", "seed": "int", "recon_mse": "float"},
        claims=tuple(_claim(exp_id, j, h) for j, h in enumerate(holds)),
        run=run,
    )


def _draw(result) -> dict:
    from factorflow.plotting import new_figure

    fig, (ax,) = new_figure()
    ax.plot(result.rows["seed"], result.rows["recon_mse"])
    return {f"{result.summary['experiment']}-curve": fig}


@pytest.fixture
def fakes(monkeypatch):
    RECEIVED.clear()
    registry = {
        "arora2019-completion": _fake("arora2019-completion"),
        "arora2019-dynamics": _fake("arora2019-dynamics", holds=(True,)),
        "razin2020-2x2": _fake("razin2020-2x2", fail=RuntimeError("boom: the fake failed")),
        "razin2021-dynamics": _fake("razin2021-dynamics", holds=(True, True, False)),
    }
    monkeypatch.setattr(experiments, "EXPERIMENTS", registry)
    monkeypatch.setattr(plotting, "figure_functions", lambda exp_id: [_draw])
    return registry


def _links(text: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", text)


def test_talk_report_end_to_end(tmp_path, fakes, capsys):
    index = reproduce_talk(tmp_path, scale="quick")
    out = capsys.readouterr().out
    # progress: every experiment announced in the talk's order
    assert [m for m in re.findall(r"\] (\S+): ", out)] == [
        i for t in TALK for i in [t.id] * (2 if t.id in fakes else 1)
    ]
    st = {k: v["status"] for k, v in index["experiments"].items()}
    assert list(st) == [t.id for t in TALK]
    assert st["razin2020-2x2"] == "failed"
    assert st["razin2020-perturbed"] == "not available"
    assert [k for k, v in st.items() if v == "ok"] == [
        "arora2019-completion",
        "arora2019-dynamics",
        "razin2021-dynamics",
    ]
    # the failing one did not stop those after it
    assert [r["id"] for r in RECEIVED] == [t.id for t in TALK if t.id in fakes]
    # the headline counts claims and experiments apart (2 claims failed, 1 experiment failed)
    assert index["claims"] == {"held": 4, "failed": 2, "not_judged": 1, "total": 7}
    assert "boom" in (tmp_path / "razin2020-2x2" / "error.txt").read_text()

    page = (tmp_path / "report.html").read_text()
    md = (tmp_path / "report.md").read_text()
    # self-contained: figures as data URIs, no external src/href
    assert page.count("data:image/png;base64,") == 3
    assert all(link.startswith(("data:", "#")) for link in _links(page))
    assert "<link" not in page and "<script" not in page
    # every section, in the talk's order
    pos = [page.index(f'id="{t.id}"') for t in TALK]
    assert pos == sorted(pos)
    md_pos = [md.index(f"`{t.id}`") for t in TALK]
    assert md_pos == sorted(md_pos)
    # claims: every claim with its measured value and verdict
    for exp_id in ("arora2019-completion", "arora2019-dynamics", "razin2021-dynamics"):
        summary = json.loads((tmp_path / exp_id / "summary.json").read_text())
        for c in summary["claims"]:
            assert c["text"] in page and c["text"] in md
            row = next(line for line in md.splitlines() if c["text"] in line)
            assert "Fake et al. 2019, Fig. 1" in row  # the paper value's source
            if c["holds"] is None:
                assert c["measured"] is None and "the fake cannot judge it" in row
            else:
                assert f"{c['measured']:.4g}" in row
            assert {True: "holds", False: "fails", None: "not judged"}[c["holds"]] in row
        assert f"synthetic rank-1 ({exp_id})" in page  # data source
        assert f"![{exp_id}-curve.png]({exp_id}/{exp_id}-curve.png)" in md
    # failure with its traceback excerpt; header counts, version, commit, total time
    assert "RuntimeError: boom: the fake failed" in page and "Traceback" in page
    assert "RuntimeError: boom: the fake failed" in md
    assert "Claims: 4 held, 2 failed, 1 not judged (of 7)" in md
    assert "Experiments: 3 ran, 1 failed, 4 not available" in md
    head = re.sub(r"<[^>]+>", "", page.split("<table>")[0])
    assert re.search(r"4 held\W+\w+ 2 failed\W+[\w ]+ 1 not judged\s+\(of 7\)", head), head
    assert "not registered" in page
    meta = index["meta"]
    assert f"factorflow {meta['factorflow']}" in md
    assert str(meta["git_commit"] or "unknown") in page
    assert "time of this sitting" in page and "seeds in the rows: [0, 1]" in page


def test_only_runs_a_subset_and_passes_settings_through(tmp_path, fakes, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # the fakes need no GPU
    index = reproduce_talk(
        tmp_path,
        scale="paper",
        seeds=3,
        device="cuda",
        only=["razin2021-dynamics", "arora2019-completion"],
        log=None,
        workers=3,
    )
    assert index["order"] == ["arora2019-completion", "razin2021-dynamics"]  # talk order
    assert RECEIVED == [
        {"id": i, "scale": "paper", "seeds": 3, "device": "cuda", "workers": 3}
        for i in index["order"]
    ]
    page = (tmp_path / "report.html").read_text()
    assert 'id="razin2020-2x2"' not in page
    assert "seeds in the rows: [0, 1, 2]" in page
    with pytest.raises(ValueError, match="unknown experiments \\['nope'\\]"):
        reproduce_talk(tmp_path, only=["nope"], log=None)


def test_cli_reproduce_talk(tmp_path, fakes, capsys):
    out = tmp_path / "talk"
    ok = ["reproduce", "talk", "--out", str(out), "--only", "arora2019-dynamics"]
    assert main(ok) == 0
    text = capsys.readouterr().out
    assert "[1/1] arora2019-dynamics" in text and "claims 1 held, 0 failed" in text
    # a failed experiment makes the command exit 1 (the report is still written)
    assert main(["reproduce", "talk", "--out", str(out), "--only", "razin2020-2x2"]) == 2
    assert "--resume" in capsys.readouterr().err  # a second talk into the folder is refused
    args = ["reproduce", "talk", "--out", str(out), "--only", "razin2020-2x2", "--resume"]
    assert main(args) == 1
    assert (out / "report.html").is_file()
    assert main(["reproduce", "razin2021-dynamics", "--out", str(out), "--only", "x"]) == 2
    assert "--only is for" in capsys.readouterr().err


def test_missing_gpu_is_one_clear_error(tmp_path, fakes, monkeypatch, capsys):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert main(["reproduce", "talk", "--out", str(tmp_path), "--device", "cuda"]) == 2
    assert "torch sees no CUDA GPU" in capsys.readouterr().err
    assert RECEIVED == []


def test_a_rerun_that_fails_does_not_show_old_results(tmp_path, fakes, monkeypatch):
    reproduce_talk(tmp_path, only=["arora2019-completion"], log=None)
    monkeypatch.setitem(
        fakes, "arora2019-completion", _fake("arora2019-completion", fail=ValueError("now broken"))
    )
    index = reproduce_talk(tmp_path, only=["arora2019-completion"], log=None, overwrite=True)
    assert index["experiments"]["arora2019-completion"]["status"] == "failed"
    assert index["claims"] == {"held": 0, "failed": 0, "not_judged": 0, "total": 0}
    # the earlier finished result is kept on disk, but the report does not show it as this run's
    assert (tmp_path / "arora2019-completion" / "summary.json").exists()
    assert "data:image/png" not in (tmp_path / "report.html").read_text()


def test_interrupt_leaves_a_report_of_what_finished(tmp_path, fakes, monkeypatch):
    monkeypatch.setitem(
        fakes, "arora2019-dynamics", _fake("arora2019-dynamics", fail=KeyboardInterrupt())
    )
    with pytest.raises(KeyboardInterrupt):
        reproduce_talk(tmp_path, log=None)
    index = json.loads((tmp_path / "talk.json").read_text())
    st = {k: v["status"] for k, v in index["experiments"].items()}
    assert st["arora2019-completion"] == "ok"
    assert st["arora2019-dynamics"] == "interrupted"
    assert st["razin2021-dynamics"] == "pending"
    page = (tmp_path / "report.html").read_text()
    assert "interrupted" in page and "claim 0 of arora2019-completion" in page
    # the report can be redrawn from the files alone
    (tmp_path / "report.html").unlink()
    html_path, md_path = write_report(tmp_path)
    assert html_path.read_text() == page


def test_bad_arguments(tmp_path, fakes):
    with pytest.raises(ValueError, match="scale"):
        reproduce_talk(tmp_path, scale="huge", log=None)
    with pytest.raises(ValueError, match="seeds"):
        reproduce_talk(tmp_path, seeds=0, log=None)
    with pytest.raises(FileNotFoundError, match="talk.json"):
        write_report(tmp_path / "empty")


def test_heartbeat_while_an_experiment_runs(tmp_path, fakes, monkeypatch):
    monkeypatch.setitem(fakes, "arora2019-dynamics", _fake("arora2019-dynamics", sleep=0.35))
    lines: list[str] = []
    reproduce_talk(tmp_path, only=["arora2019-dynamics"], log=lines.append, heartbeat_s=0.1)
    beats = [line for line in lines if "still running" in line]
    assert beats and beats[0].startswith("[1/1] arora2019-dynamics: still running, 0 s")


def test_parallel_jobs_give_the_same_report(tmp_path, fakes, monkeypatch):
    # worker processes inherit the fake registry through fork (the CLI spawns fresh ones)
    monkeypatch.setattr("factorflow.talk.MP_CONTEXT", "fork")
    lines: list[str] = []
    one = reproduce_talk(tmp_path / "one", log=None)
    two = reproduce_talk(tmp_path / "two", jobs=3, log=lines.append, heartbeat_s=0)
    for key in ("order", "claims"):
        assert two[key] == one[key]
    for exp_id, entry in one["experiments"].items():
        other = two["experiments"][exp_id]
        assert other["status"] == entry["status"]
        assert other.get("claims") == entry.get("claims")
        assert other.get("error") == entry.get("error")
    # each worker's printed output is kept; the failure is reported with its traceback
    assert (tmp_path / "two" / "logs" / "arora2019-dynamics.txt").is_file()
    assert "boom" in (tmp_path / "two" / "razin2020-2x2" / "error.txt").read_text()
    assert any("razin2020-2x2: FAILED" in line for line in lines)
    assert sum("running" in line for line in lines) == 4  # each available one started once
    # the longest (by EXPECTED_SECONDS at quick scale) started first
    assert "arora2019-dynamics" in next(line for line in lines if "running" in line)
    md_one = (tmp_path / "one" / "report.md").read_text()
    md_two = (tmp_path / "two" / "report.md").read_text()
    claims_rows = [r for r in md_one.splitlines() if "claim " in r and "|" in r]
    assert claims_rows and all(r in md_two for r in claims_rows)


def test_longest_first_uses_the_scale_s_own_times():
    from factorflow.talk import TALK
    from factorflow.talk_schedule import EXPECTED_SECONDS, longest_first

    ids = [t.id for t in TALK]
    assert set(EXPECTED_SECONDS["paper"]) == set(EXPECTED_SECONDS["quick"]) == set(ids)
    quick, paper = longest_first(ids, "quick"), longest_first(ids, "paper")
    # natural rank: 8 s at quick scale (among the last), 4,229 s at paper scale (second, after
    # IRMAE); starting it last at paper scale would leave one core idle for over an hour
    assert quick.index("razin2021-natural-rank") >= 5
    assert paper[:2] == ["jing2020-irmae", "razin2021-natural-rank"]
    assert longest_first(ids, "smoke") == quick  # no table of its own
    assert longest_first(["zzz", "razin2020-2x2"], "paper") == ["razin2020-2x2", "zzz"]


def test_talk_jobs_option(monkeypatch):
    from factorflow.cli import _talk_jobs

    assert _talk_jobs(3, "cpu") == 3
    assert _talk_jobs(None, "cuda") == 1
    assert 1 <= _talk_jobs(None, "cpu") <= 8
    with pytest.raises(ValueError, match="--jobs must be >= 1"):
        _talk_jobs(0, "cpu")


def test_cli_option_reaches_the_experiment(tmp_path, fakes, capsys):
    args = ["reproduce", "razin2021-dynamics", "--out", str(tmp_path / "o")]
    opts = ["--option", "seeds = 3", "--option", "shape=[2, 5]", "--option", 'data_source="x"']
    assert main(args + opts + ["--workers", "2"]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["config"]["seeds"] == 3 and summary["config"]["shape"] == [2, 5]
    assert RECEIVED[-1]["seeds"] == 3 and RECEIVED[-1]["workers"] == 2
    bad = [
        (["--option", "data_source=flow"], "not a TOML value"),  # a bare string
        (["--option", "noequals"], "KEY=VALUE"),
        (["--option", "depth=[3]"], "'depth' must be an integer, got [3]"),
        (["--option", 'depth="three"'], "'depth' must be an integer, got 'three'"),
        (["--option", "shape=3"], "'shape' must be a list of 2"),
        (["--option", "nope=1"], "unknown option 'nope'"),
    ]
    for extra, message in bad:
        assert main([*args, "--overwrite", *extra]) == 2
        assert message in capsys.readouterr().err


def test_headline_equals_the_sum_over_the_experiments(tmp_path, fakes):
    index = reproduce_talk(tmp_path, log=None)
    summaries = {
        i: json.loads((tmp_path / i / "summary.json").read_text())
        for i, e in index["experiments"].items()
        if e["status"] == "ok"
    }
    t = totals(index, summaries)
    for key, label in (("held", True), ("failed", False), ("not_judged", None)):
        assert t["claims"][key] == sum(
            c["holds"] is label for s in summaries.values() for c in s["claims"]
        )
    assert t["claims"]["failed"] != t["experiments"]["failed"]  # the fixture tells them apart


def test_second_talk_into_a_folder_is_refused_unless_resume_or_overwrite(tmp_path, fakes):
    reproduce_talk(tmp_path, only=["arora2019-dynamics"], log=None)
    with pytest.raises(FileExistsError, match="--resume"):
        reproduce_talk(tmp_path, only=["arora2019-dynamics"], log=None)
    RECEIVED.clear()
    index = reproduce_talk(tmp_path, only=["arora2019-dynamics"], log=None, resume=True)
    assert RECEIVED == []  # kept, not rerun
    assert index["experiments"]["arora2019-dynamics"]["status"] == "ok"
