"""The HTML / LaTeX report, its figures and the compact terminal, on the hand-made results of conftest.py."""

import re

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from mmfair.cli.app import app
from mmfair.core import pipeline
from mmfair.core.config import ReportConfig
from mmfair.core.reporting import figures as F
from mmfair.core.reporting import views as V
from mmfair.core.reporting.html import SECTIONS, build_sections
from mmfair.core.reporting.inputs import load_inputs
from mmfair.core.reporting.render import render_terminal

def _fixture_module():
    """This folder's conftest.py by path: several test folders have a module named ``conftest``."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("report_fixture_conftest", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PLANTED, PLANTED_VALUE = _fixture_module().PLANTED, _fixture_module().PLANTED_VALUE
FIGURES = {"fusion_forest", "leaderboard", "cd_diagram", "missing_auroc", "missing_equalized_odds_difference",
           "group_forest", "fairness_scatter", "shapley", "attrition", "cxr_availability",
           "reliability_mortality"}  # fmt: skip


@pytest.fixture
def sections(results_ws):
    tables = pipeline.report_tables(ReportConfig(), results_ws)
    return build_sections(load_inputs(results_ws), tables, 10)


def test_html_is_self_contained_with_every_section_and_figure(results_ws):
    _, path, text = pipeline.report(ReportConfig(format="html"), results_ws)
    assert path == results_ws.reports / "report.html" and path.read_text() == text
    for title in SECTIONS.values():
        assert f">{title}</h2>" in text
    assert set(re.findall(r"data-figure='([a-z_]+)'", text)) == FIGURES
    assert "<td>data fingerprint</td><td>fixture0fingerprint</td>" in text and "<td>git commit</td>" in text
    # nothing loads from anywhere: no script, no link, no src/href but in-page anchors (SVG's xmlns is a name)
    assert "<script" not in text.lower() and "<link" not in text.lower()
    assert not re.findall(r"(?:src|href)=['\"](?!#)", text)
    written = {p.name for p in (results_ws.reports / "figures").iterdir()}
    assert written == {f"{n}.{e}" for n in FIGURES for e in ("png", "pdf")}


def test_planted_small_group_is_in_no_figure(sections):
    svgs = {name: F.to_svg(fig) for s in sections for name, _, fig in s.figures}
    for name, svg in svgs.items():
        assert PLANTED not in svg, name
        assert f"{PLANTED_VALUE:.3f}"[:5] not in svg and "0.424" not in svg, name
    # complementary suppression: ASIAN (n=60, the next-smallest race group) goes with it; WHITE stays
    assert "ASIAN" not in svgs["group_forest"] and "WHITE" in svgs["group_forest"]
    # Shapley's block is WHITE (150), BLACK (60), TINYGRP (5): BLACK is the complement there
    assert "BLACK" not in svgs["shapley"] and "WHITE" in svgs["shapley"]
    # reliability: TINYGRP (5 stays) and its complement ASIAN (60) are drawn for no method; WHITE is
    assert "ASIAN" not in svgs["reliability_mortality"] and "WHITE" in svgs["reliability_mortality"]
    # 5 stays removed at age >= 18: merged with the next step, so 600 − 595 cannot be read off
    assert "age &gt;= 18; ICU stay &gt;= 48 h" in svgs["attrition"] and "− 115" in svgs["attrition"]
    assert "595" not in svgs["attrition"]


def test_attrition_merges_small_steps_by_hand():
    import pandas as pd

    from mmfair.core.reporting.inputs import suppress_attrition

    steps = pd.DataFrame({"step": ["all", "a", "b", "c", "d"], "kept": [1000, 997, 990, 900, 896],
                          "removed": [0, 3, 7, 90, 4]})  # fmt: skip
    out = suppress_attrition(steps, 10)
    # a (3) + b (7) = 10 shown as one step; d (4) is last: merged back into c
    assert out["step"].tolist() == ["all", "a; b", "c; d"]
    assert out["kept"].tolist() == ["1,000", "990", "896"] and out["removed"].tolist() == ["0", "10", "94"]
    assert out["removed_total"].tolist() == ["0", "10", "104"]


def test_fusion_reading_and_holm_across_the_comparisons_shown(sections):
    fusion = sections[0]
    # late − ehr = 0.78 − 0.74, late − cxr = 0.08 (both intervals above 0); early − late = +0.02 [0.00, 0.04]
    assert "Of 2 comparisons of a fusion model with a single-modality model, 2 show fusion better" in fusion.reading
    assert "across the 3 comparisons shown" in fusion.reading
    table = fusion.tables[0].set_index("comparison")
    assert table.loc["late − ehr", "difference [95% CI]"] == "+0.040 [+0.020, +0.060]"
    # raw p 0.01, 0.01, 0.2 → Holm 0.03, 0.03, 0.2
    assert table["p Holm (m=3)"].to_dict() == {"early − late": "0.200", "late − cxr": "0.030", "late − ehr": "0.030"}


def test_cd_ranks_and_pareto_front_by_hand(results_ws):
    inputs = load_inputs(results_ws)
    ranks, cd, blocks = V.critical_difference(inputs.metrics)
    assert blocks == 5  # mortality (all) + 4 phenotype labels
    assert ranks.to_dict() == {"early": 1.0, "late": 2.0, "ehr": 3.0, "cxr": 4.0}
    points = V.fairness_points(inputs.metrics, inputs.fairness, 10)
    # (AUROC, EO gap): early (0.80, 0.32), late (0.78, 0.22), ehr (0.74, 0.26), cxr (0.70, 0.30)
    assert set(points.loc[points["pareto"], "method"]) == {"early", "late"}


def test_missing_curves_average_nothing_across_methods(results_ws):
    curves = V.missing_curves(load_inputs(results_ws).missing)
    late = curves[(curves["method"] == "late") & (curves["metric"] == "auroc")].set_index("x")["value"]
    assert np.allclose(late.to_numpy(), [0.78, 0.75, 0.72])


def test_latex_has_booktabs_tables(results_ws):
    _, path, text = pipeline.report(ReportConfig(format="latex", figures=False), results_ws)
    assert path.name == "report.tex" and text.startswith("\\documentclass")
    assert "\\toprule" in text and "\\midrule" in text and "\\bottomrule" in text
    assert text.isascii()  # every symbol escaped: compiles with pdflatex's default fonts
    assert "race\\_group" in text and "\\includegraphics[width=\\linewidth]{figures/leaderboard.pdf}" in text


def _terminal_lines(ws, width: int = 100, **kwargs):
    tables = pipeline.report_tables(ReportConfig(), ws)
    console = Console(width=width, record=True, file=open("/dev/null", "w"))
    for item in render_terminal(tables, load_inputs(ws), **kwargs):
        console.print(item)
    console.file.close()
    return console.export_text().splitlines()


def test_terminal_rows_never_wrap_at_100_columns(results_ws):
    lines = _terminal_lines(results_ws)
    assert max(len(line) for line in lines) <= 100
    board = [line for line in lines if line.strip().startswith("mortality") and "[" in line and "−" not in line]
    assert len(board) == 4  # one line per method: no row folded onto a second line
    assert len(lines) < 60
    assert not any(PLANTED in line for line in lines)


def test_terminal_prose_wraps_at_100_columns_on_a_wide_terminal(results_ws):
    import pandas as pd

    from mmfair.core.evaluation.tidy import read_results
    from mmfair.core.io import write_csv_atomic

    metrics = read_results(results_ws.metrics_csv)
    rules = ("worst_group", "pareto", "dto", "equalized_odds_constrained", "demographic_parity_constrained")
    extra = [metrics.assign(selection=rule, run_id=metrics["run_id"] + "-" + rule) for rule in rules]
    write_csv_atomic(results_ws.metrics_csv, pd.concat([metrics, *extra], ignore_index=True))
    lines = _terminal_lines(results_ws, width=200)
    assert max(len(line) for line in lines) <= 100
    also = " ".join(line.strip() for line in lines if line.strip())  # the conditions line, over several lines
    assert all(f"selection={rule}" in also for rule in rules)


def test_terminal_long_method_names_are_cut_not_wrapped(results_ws):
    import pandas as pd

    from mmfair.core.evaluation.tidy import read_results
    from mmfair.core.io import write_csv_atomic

    metrics = read_results(results_ws.metrics_csv)
    metrics["train_cohort"], metrics["split"], metrics["train_missing"] = "matched", "temporal", "dropout=0.3+rate=0.5"
    write_csv_atomic(results_ws.metrics_csv, metrics)
    lines = _terminal_lines(results_ws)
    assert max(len(line) for line in lines) <= 100
    assert sum("…" in line for line in lines if line.strip().startswith("mortality")) >= 4
    assert isinstance(pd.__version__, str)


def test_detail_adds_the_per_group_tables(results_ws):
    short, detailed = _terminal_lines(results_ws), _terminal_lines(results_ws, detail=True)
    assert not any("Per-group performance" in line for line in short)
    assert any("Per-group performance" in line for line in detailed)


def test_report_to_an_unwritable_path_is_one_line_and_exit_2(results_ws, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = CliRunner().invoke(app, ["--workspace", str(results_ws.root), "report", "--format", "html",
                                      "--out", str(blocker / "report.html")])  # fmt: skip
    assert result.exit_code == 2
    assert "cannot write the report to" in result.output and "Traceback" not in result.output


def test_dropout_grid_appears_only_with_train_time_missingness(results_ws):
    from mmfair.core.evaluation.tidy import read_results
    from mmfair.core.io import write_csv_atomic

    missing = read_results(results_ws.missing_csv)
    assert len(V.dropout_grid(missing)) == 0
    extra = missing[missing["method"] == "late"].assign(run_id="late-dropout", train_missing="dropout=0.3")
    extra["value"] = extra["value"] + 0.01
    import pandas as pd

    write_csv_atomic(results_ws.missing_csv, pd.concat([missing, extra], ignore_index=True))
    grid = V.dropout_grid(read_results(results_ws.missing_csv)).set_index(["method", "trained with"])
    # late: 0.78 − 0.06 × rate; trained with dropout: 0.01 higher at each rate
    assert np.allclose(grid.loc[("late", "none")].to_numpy(dtype=float), [0.78, 0.75, 0.72])
    assert np.allclose(grid.loc[("late", "dropout=0.3")].to_numpy(dtype=float), [0.79, 0.76, 0.73])
    assert list(grid.columns) == ["test 0%", "test 50%", "test 100%"]


def test_cli_terminal_report_and_detail(results_ws):
    runner = CliRunner()
    short = runner.invoke(app, ["--workspace", str(results_ws.root), "report"])
    detailed = runner.invoke(app, ["--workspace", str(results_ws.root), "report", "--detail"])
    assert short.exit_code == 0 and detailed.exit_code == 0
    assert "Leaderboard" in short.output and "Per-group performance" not in short.output
    assert "Per-group performance" in detailed.output


@pytest.mark.parametrize("name", ["fusion_forest", "leaderboard", "missing_curves", "group_forest",
                                  "fairness_scatter", "shapley_bars", "attrition_flow", "cxr_availability"])
def test_every_figure_function_draws_nothing_from_nothing(name):
    import pandas as pd

    empty = {"fusion_forest": V.paired_comparisons, "leaderboard": lambda f: V.leaderboard(f)[0],
             "missing_curves": V.missing_curves, "group_forest": lambda f: V.group_estimates(f, 10)[0],
             "fairness_scatter": lambda f: V.fairness_points(f, f, 10),
             "shapley_bars": lambda f: V.shapley_values(f, 10)}  # fmt: skip
    from mmfair.core.evaluation.tidy import to_frame

    frame = empty[name](to_frame([])) if name in empty else pd.DataFrame(
        columns=["attribute", "group", "n", "with_cxr", "share", "suppressed"])
    assert getattr(F, name)(frame) is None


def test_corrected_resampled_t_interval_by_hand():
    # d = 0.01, 0.03, 0.05: mean 0.03, s² = 0.0004; (1/3 + 1/3) · s² → se 0.016330; t(0.975, 2) = 4.302653
    lo, hi = V.corrected_t_interval(np.array([0.01, 0.03, 0.05]))
    assert lo == pytest.approx(0.03 - 4.302653 * 0.0163299, abs=1e-5)
    assert hi == pytest.approx(0.03 + 4.302653 * 0.0163299, abs=1e-5)
    assert np.isnan(V.corrected_t_interval(np.array([0.02]))[0])


def test_several_folds_are_judged_by_the_interval_over_runs(results_ws):
    from mmfair.core.evaluation.tidy import read_results

    fairness = read_results(results_ws.fairness_csv)
    ehr = fairness[(fairness["method"] == "ehr") & fairness["metric"].str.startswith("auroc_difference")]
    fold1 = ehr.assign(run_id="ehr-mortality-f1", fold=1)
    fold1.loc[fold1["metric"] == "auroc_difference", ["value", "ci_low", "ci_high"]] = [-0.06, -0.08, -0.04]
    import pandas as pd

    comp = V.paired_comparisons(pd.concat([fairness, fold1], ignore_index=True)).set_index("other")
    row = comp.loc["ehr"]
    assert row["runs"] == 2 and row["diff"] == pytest.approx(0.05)
    # d = 0.04, 0.06: s² = 0.0002, (1/2 + 1/3) s² → se 0.0129099; t(0.975, 1) = 12.7062
    assert row["t_lo"] == pytest.approx(0.05 - 12.7062 * 0.0129099, abs=1e-4)
    # each fold's bootstrap interval is above 0, the interval over the two folds is not
    assert row["lo"] > 0 and row["verdict"] == "no difference shown"
    assert np.isnan(row["p"])  # no single permutation p over runs: not counted in Holm


def test_modality_addition_steps_by_hand(results_ws):
    inputs = load_inputs(results_ws)
    steps = V.addition_steps(inputs.metrics, inputs.fairness)
    eo = steps[steps["quantity"] == "EO diff"].set_index(["method", "from", "added"])["change"]
    au = steps[steps["quantity"] == "AUROC"].set_index(["method", "from", "added"])["change"]
    # early: ehr 0.74 → 0.80 while the EO gap widens 0.26 → 0.32; late: 0.74 → 0.78, gap 0.26 → 0.22
    assert au[("early", "ehr", "cxr")] == pytest.approx(0.06) and eo[("early", "ehr", "cxr")] == pytest.approx(0.06)
    assert au[("late", "ehr", "cxr")] == pytest.approx(0.04) and eo[("late", "ehr", "cxr")] == pytest.approx(-0.04)
    assert au[("late", "cxr", "ehr")] == pytest.approx(0.08)
    assert len(au) == 4  # late and early, each from ehr and from cxr; the unimodal runs start no step


def test_provenance_warns_on_mixed_protocols_and_an_encoder_that_saw_mimic_cxr():
    import pandas as pd

    from mmfair.core.reporting.html import provenance_warnings

    table = pd.DataFrame({"item": ["evaluation protocols in the results", "mmfair versions in the results"],
                          "value": ["1, 2", "0.1.0"]})
    prep = {"encoder": {"card": {"provenance_warning": "encoder pretrained on MIMIC-CXR: it saw test patients"}}}
    warnings = provenance_warnings(table, prep)
    assert len(warnings) == 2 and "evaluation protocols (1, 2)" in warnings[0] and "MIMIC-CXR" in warnings[1]
    assert provenance_warnings(table.assign(value=["2", "0.1.0"]), {"encoder": {"card": {}}}) == []
