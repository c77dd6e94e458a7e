"""The round report's stage table shows failed items and the first reason."""

from __future__ import annotations

from pipeline.report import round_report


def test_a_stage_that_lost_items_shows_how_many_and_why():
    manifest = {"config": {"name": "r"}, "config_hash": "0" * 64, "seed": 1, "git_sha": None, "stages": {
        "scores/per": {"status": "done", "rows": 720, "seconds": 1.0, "metrics": {
            "failed": 180, "failures": [{"candidate_id": "c-1", "error": "error rate: output=215"}]}},
        "scores/reward": {"status": "done", "rows": 720, "seconds": 1.0, "metrics": {"failed": 0, "failures": []}}}}
    report = round_report(manifest)
    assert "| scores/per | done | 720 | 180 | 1.0 |" in report
    assert "- scores/per: 180 failed, e.g. c-1: error rate: output=215" in report
    assert "- scores/reward" not in report
