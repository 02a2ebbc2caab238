"""The benchmark script runs and reports consistent figures (no speed is asserted)."""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments"))
import bench  # noqa: E402


def test_bench_prints_one_json_row_per_measurement(capsys):
    bench.main(["--models", "vgg8", "--methods", "irs", "--width", "0.0625", "--channels", "1",
                "--batch-size", "16", "--steps", "1", "--mc-runs", "2", "--mc-images", "32",
                "--eval-batch-size", "16", "--seeds", "2", "--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["bench"] for r in rows] == ["monte_carlo", "train", "train_seeds"]
    mc, train, seeds = rows
    assert mc["max_abs_diff_vs_loop"] == 0.0
    assert mc["image_evals_per_s"] > 0 and mc["bare_forward_images_per_s"] > 0
    assert mc["gflop_per_image"] > 0
    assert train["images_per_s"] > 0 and train["method"] == "irs"
    assert seeds["seeds"] == 2 and seeds["sequential_images_per_s"] == train["images_per_s"]
    assert seeds["speedup_vmap_vs_sequential"] == (seeds["vmap_images_per_s"]
                                                   / train["images_per_s"])
