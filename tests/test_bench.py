"""The benchmark script runs and reports consistent figures (no speed is asserted)."""

import json
import os
import sys

import pytest
from tiny import TINY_DATA_DIR

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments"))
import bench  # noqa: E402

# The bench runs' shared settings: one model, batch, method and Monte Carlo shape, so that
# the runs compile their train step, forward, loop and Monte Carlo programs once between
# them (the session's compilation cache); whole-batch conv backward, the faster compile.
SMALL = ["--models", "vgg8", "--methods", "noise", "--width", "0.0625", "--channels", "1",
         "--batch-size", "8", "--steps", "1", "--mc-runs", "3", "--mc-images", "16",
         "--eval-batch-size", "8", "--backward-micro-batch", "0"]


def test_bench_prints_one_json_row_per_measurement(capsys):
    bench.main([*SMALL, "--seeds", "2", "--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["bench"] for r in rows] == ["monte_carlo", "train", "train_seeds"]
    mc, train, seeds = rows
    assert mc["max_abs_diff_vs_loop"] == 0.0 and mc["loop_runs"] == 3
    assert mc["image_evals_per_s"] > 0 and mc["bare_forward_images_per_s"] > 0
    assert mc["gflop_per_image"] > 0
    assert train["images_per_s"] > 0 and train["method"] == "noise"
    assert 0 < train["compile_s"] < train["first_step_s"]
    assert seeds["seeds"] == 2 and seeds["sequential_images_per_s"] == train["images_per_s"]
    assert seeds["speedup_vmap_vs_sequential"] == (seeds["vmap_images_per_s"]
                                                   / train["images_per_s"])


def test_bench_end_to_end_row_times_the_real_loop_beside_the_bare_step(capsys):
    # One input channel, as mnist5k's: the train row and the bare step share one program.
    bench.main(["--models", "vgg8", "--methods", "noise", "--width", "0.0625", "--channels", "1",
                "--batch-size", "64", "--steps", "2", "--skip-mc", "--end-to-end", "1",
                "--checkpoint-every", "0", "--val-mc-runs", "2", "--backward-micro-batch", "0",
                "--val-every", "2", "--data-dir", TINY_DATA_DIR, "--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["bench"] for r in rows] == ["train", "end_to_end"]
    e2e = rows[1]  # 3 epochs: timed from the end of the first validated one (2), to 3
    assert e2e["val_mc_runs"] == 2 and e2e["val_every"] == 2
    # tests/tiny.py's 1,000 digits: 720 train, 11 steps of 64 an epoch
    assert e2e["images"] == 1 * (720 // 64) * 64 and e2e["epochs_timed"] == 1
    assert e2e["loop_images_per_s"] > 0 and e2e["bare_images_per_s"] > 0
    assert e2e["fraction_of_bare"] == e2e["loop_images_per_s"] / e2e["bare_images_per_s"]
    # the timed window in Unix seconds (concurrent copies are compared where they overlap)
    window = e2e["timed_to_unix"] - e2e["timed_from_unix"]
    assert window > 0 and window == pytest.approx(e2e["images"] / e2e["loop_images_per_s"],
                                                       rel=0.05, abs=0.05)
    assert all(r["device"] for r in rows)  # the CPU model (or GPU kind) in every row


def test_conv_profile_handles_strided_and_1x1_convs_of_resnet18():
    import jax
    import profile_conv

    # profile_layer itself checks its im2col filter gradient against XLA's.
    row = profile_conv.profile_layer(2, 8, 4, 6, 1, 2, 3, jax.random.key(0))
    assert row["layer"] == "8x8 4->6 k1 s2 ×3"
    assert row["gflop"] == 3 * 2 * 2 * 4 * 4 * 4 * 6 / 1e9
    assert row["forward_ms"] > 0 and row["forward_gflops"] > 0
    kernels = {(k, s) for _, _, _, k, s, _ in profile_conv.convs("resnet18")}
    assert kernels == {(3, 1), (3, 2), (1, 2)}
    assert sum(n for *_, n in profile_conv.convs("resnet18")) == 17 + 3  # 17 3×3 + 3 shortcuts


def test_conv_profile_times_the_micro_batched_backward_and_checks_it():
    import jax
    import profile_conv

    # 32×32 maps, batch 16, micro-batch 4: four pieces; profile_layer asserts that their
    # filter gradient equals the whole batch's before timing.
    row = profile_conv.profile_layer(16, 32, 2, 3, 3, 1, 1, jax.random.key(0), micro_batch=4)
    assert row["backward_ms"] > 0 and row["backward_micro_batched_ms"] > 0
    assert row["backward_gflops"] == pytest.approx(2 * row["gflop"] / row["backward_ms"] * 1e3)


def test_bench_times_each_chunk_size_checks_precision_and_writes_jsonl(capsys, tmp_path):
    path = tmp_path / "rows.jsonl"
    bench.main([*SMALL, "--chunk-size", "1,2", "--loop-runs", "2",
                "--check-precision", "tf32,bf16", "--json", "--jsonl", str(path)])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows == [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["bench"] for r in rows] == ["precision"] * 2 + ["monte_carlo"] * 2 + ["train"]
    tf32, bf16 = rows[:2]
    assert tf32["logits_rel_err"] == 0.0  # tf32 is fp32 on CPU
    assert 0 < bf16["logits_rel_err"] < 0.1 and bf16["finite"]
    mc1, mc2 = rows[2:4]
    assert (mc1["chunk_size"], mc2["chunk_size"]) == (1, 2)
    for mc in (mc1, mc2):  # the loop ran 2 of the 3 keys; their accuracies match
        assert mc["loop_runs"] == 2 and mc["max_abs_diff_vs_loop"] == 0.0
        assert mc["gflop_per_image"] > 0


@pytest.mark.parametrize("flags, says", [
    (["--chunk-size", "1,x"], "--chunk-size"), (["--check-precision", "fp64"], "fp64"),
    (["--steps", "0"], "--steps"), (["--models", "vgg9"], "did you mean 'vgg8'?"),
    (["--methods", "irss"], "did you mean 'irs'?"), (["--width", "0"], "--width"),
    (["--jsonl", "{tmp}/file/rows.jsonl"], "--jsonl: cannot write"),
])
def test_bench_rejects_bad_flags_before_timing_anything(flags, says, tmp_path, capsys):
    """One line, status 2, before any row: an unknown model, a zero width or an --jsonl
    below a file used to end the bench with a traceback (the last after all the timing)."""
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--skip-train", *[f.format(tmp=tmp_path) for f in flags]])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and says in err and "img" not in out
