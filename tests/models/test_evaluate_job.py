"""jobs.evaluate end to end on small files: the JSON interface, tuning rows in Delta, the HTML report."""
from __future__ import annotations

import json

import pytest

from flow.input_checks import MostlyRejectedError
from jobs import evaluate
from lake import tables
from conftest import two_group_ratings

# one configuration x 2 folds: the search itself (several configurations, the best picked) is tested in test_tuning
TINY_GRID = ["--tune", "--tune-folds", "2", "--ranks", "4", "--reg-params", "0.05", "--alphas", "5",
             "--max-iters", "4", "--num-blocks", "1"]


@pytest.mark.slow
def test_implicit_evaluation_with_tuning(spark, ratings_csv, tmp_path):
    out, report, table = tmp_path / "metrics.json", tmp_path / "report.html", str(tmp_path / "tuning")
    args = evaluate.build_parser().parse_args([
        "--input", str(ratings_csv), "--format", "movielens", "--split", "user-random", "--test-fraction", "0.25",
        "--k", "5", "--seed", "42", "--output", str(out), "--report", str(report), "--tuning-table", table,
        *TINY_GRID])
    evaluate.run(spark, args)
    got = json.loads(out.read_text())
    for model in ("als", "popularity"):
        for key in ("ndcg@5", "precision@5", "recall@5", "map@5", "coverage"):
            assert 0.0 <= got[model][key] <= 1.0, (model, key)
        assert got[model]["users_evaluated"] == 24
    assert set(got["als_params"]) == {"rank", "reg_param", "alpha", "max_iter"}
    assert got["als_params"]["reg_param"] == got["tuning"]["best"]["reg_param"]
    # two taste groups: a personalised model must beat one list for everybody
    assert got["als"]["ndcg@5"] > got["popularity"]["ndcg@5"]
    rows = tables.read(spark, table)
    assert rows.count() == 2 and rows.where("is_best").count() == 2
    html = report.read_text()
    assert html.count("<svg") >= 6 and "Popularity bias" in html and "Tuning" in html


@pytest.mark.slow
def test_explicit_cv_on_an_events_file_reports_rmse_beside_the_bias_baseline(spark, tmp_path):
    events = tmp_path / "events.csv"
    lines = ["user_id,item_id,event_type,event_ts,value"]
    lines += [f"u{u},i{i},rating,{t},{r}" for u, i, r, t in two_group_ratings()]
    lines += ["u1,,rating,1600000000,4", "u2,i3,rating,not-a-time,4"]  # two bad rows, counted
    events.write_text("\n".join(lines) + "\n")
    out = tmp_path / "explicit.json"
    args = evaluate.build_parser().parse_args([
        "--input", str(events), "--format", "events", "--explicit", "--folds", "2", "--seed", "1",
        "--rank", "4", "--max-iter", "4", "--reg-param", "0.1", "--num-blocks", "1", "--output", str(out)])
    evaluate.run(spark, args)
    got = json.loads(out.read_text())
    assert got["protocol"] == "explicit" and got["cv"]["folds"] == 2
    assert 0 < got["rmse"] < 3 and 0 < got["mae"] < 3
    assert 0 < got["bias"]["rmse"] < 3
    reasons = got["input"]["rows_by_reason"]
    assert reasons["None"] == len(lines) - 3 and reasons.get("header") == 1
    assert sum(v for k, v in reasons.items() if k not in ("None", "header")) == 2  # both bad rows, by reason


@pytest.mark.slow
def test_counts_sent_as_ratings_stop_evaluation_before_any_metric(spark, tmp_path):
    """Issue 34: play counts given as rating events were 97.8% rating_out_of_range, and metrics came out on the rest."""
    events = tmp_path / "counts.csv"
    lines = [f"u{u},i{i},rating,{t},{int(r) * 40 + u}" for u, i, r, t in two_group_ratings()]
    lines[0] = "u0,i0,rating,1600000000,4"  # the one count that fits the scale
    events.write_text("\n".join(lines) + "\n")
    out = tmp_path / "metrics.json"
    args = evaluate.build_parser().parse_args([
        "--input", str(events), "--format", "events", "--rank", "4", "--max-iter", "2", "--num-blocks", "1",
        "--output", str(out)])
    with pytest.raises(MostlyRejectedError) as failure:
        evaluate.run(spark, args)
    message = str(failure.value)
    assert message.startswith(f"evaluate {events}: no metrics computed: {len(lines) - 1:,} of {len(lines):,} row(s)")
    assert "expected events: CSV lines user_id,item_id,event_type,event_ts,value,event_id" in message
    assert f"rating_out_of_range {len(lines) - 1:,}  e.g. file:{events}: '{lines[1]}'" in message
    assert not out.exists()


@pytest.mark.slow
def test_pairs_with_log1p_weights_are_evaluated_with_the_shared_weighting_flags(spark, tmp_path):
    pairs = tmp_path / "plays.tsv"
    rows = two_group_ratings()
    pairs.write_text("userID\tartistID\tweight\n" + "".join(f"u{u}\ta{i}\t{int(r) ** 3}\n" for u, i, r, _ in rows))
    out = tmp_path / "pairs.json"
    args = evaluate.build_parser().parse_args([
        "--input", str(pairs), "--format", "pairs", "--weight-scaling", "log1p", "--event-weights", '{"pair": null}',
        "--k", "5", "--rank", "4", "--max-iter", "4", "--reg-param", "0.05", "--num-blocks", "1",
        "--output", str(out)])
    evaluate.run(spark, args)
    got = json.loads(out.read_text())
    assert got["input"]["rows_by_reason"] == {"None": len(rows), "header": 1}
    assert got["input"]["pairs"] == len(rows) and got["input"]["value_ignored"] == {}
    assert got["als"]["ndcg@5"] > got["popularity"]["ndcg@5"]
