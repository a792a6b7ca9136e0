"""The batch options every image command shares: inputs (files, directories, -r, globs, stdin,
--from-list), per-file failures, output naming (-o, --name), --shard, --dry-run, -j, --fail-fast,
and interrupts of a parallel run."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from helpers import SAMPLES, digest, json_lines, run
from poolcli import imageio
from poolcli.ops import max_pool2d


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """200 small sample-derived images (nested), 3 bad files among them."""
    monkeypatch.chdir(tmp_path)
    src = np.asarray(Image.open(os.path.join(SAMPLES, "chelsea.png")))
    os.makedirs("in/sub")
    rng = np.random.default_rng(0)
    for i in range(197):
        y, x = rng.integers(0, 200), rng.integers(0, 350)
        sub = "in/sub" if i % 4 == 0 else "in"
        Image.fromarray(src[y:y + 64, x:x + 96]).save(f"{sub}/img{i:03d}.png")
    open("in/bad1.png", "wb").write(b"")
    open("in/bad2.png", "wb").write(b"\x89PNG\r\n\x1a\n" + os.urandom(50))
    open("in/sub/bad3.jpg", "wb").write(b"\xff\xd8\xff" + b"\x00" * 20)
    open("in/readme.txt", "w").write("not an image")
    return tmp_path


def test_bad_file_fails_alone_and_others_are_processed(workdir):
    open("broken.png", "wb").write(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    r = run("pool", "broken.png", "chelsea.png", "missing.png")
    assert r.exit_code == 1
    errors = [l for l in r.output.splitlines() if l.startswith("poolcli: error:")]
    assert len(errors) == 2
    assert any("broken.png" in e for e in errors) and any("missing.png" in e for e in errors)
    assert os.path.exists("chelsea_max.png")
    assert not os.path.exists("broken_max.png")
    assert not [f for f in os.listdir(".") if f.endswith(".part")]


def test_directory_input_and_output_directory(workdir):
    os.mkdir("in")
    shutil.copy("chelsea.png", "in/a.png")
    shutil.copy("camera.png", "in/b.png")
    open("in/notes.txt", "w").write("not an image")
    r = run("pool", "in", "-o", "deep/out")
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir("deep/out")) == ["a_max.png", "b_max.png"]
    assert "skipped 1" in r.output


def test_200_images_with_3_bad_in_parallel(folder):
    before = {p: digest(os.path.join(d, p)) for d, _, fs in os.walk("in") for p in fs}
    r = run("pool", "in", "-r", "-o", "out", "-j", "2", "--json", "-q")
    assert r.exit_code == 1
    recs = json_lines(r)
    summary = recs[-1]["summary"]
    assert summary["ok"] == 197 and summary["failed"] == 3 and summary["skipped"] == 1
    errors = [l for l in r.stderr.splitlines() if l.startswith("poolcli: error:")]
    assert len(errors) == 3
    for bad in ("bad1.png", "bad2.png", "bad3.jpg"):
        assert sum(bad in e for e in errors) == 1
    # results in input order, structure mirrored under -o
    inputs = [rec["input"] for rec in recs[:-1]]
    assert inputs == sorted(inputs, key=lambda p: (os.path.dirname(p) != "in", p))
    assert len(os.listdir("out/sub")) == 50 and os.path.exists("out/img001_max.png")
    after = {p: digest(os.path.join(d, p)) for d, _, fs in os.walk("in") for p in fs}
    assert before == after
    leftovers = [f for d, _, fs in os.walk(".") for f in fs if f.endswith(".part")]
    assert leftovers == []
    out = np.asarray(Image.open("out/img001_max.png"))
    np.testing.assert_array_equal(out, max_pool2d(np.asarray(Image.open("in/img001.png")), 2))


def test_parallel_equals_serial(folder):
    a = run("pool", "in", "-o", "a", "-j", "1", "-q", "--op", "stochastic", "--seed", "3")
    b = run("pool", "in", "-o", "b", "-j", "2", "-q", "--op", "stochastic", "--seed", "3")
    assert a.exit_code == b.exit_code == 1
    assert sorted(os.listdir("a")) == sorted(os.listdir("b"))
    for f in os.listdir("a"):
        assert digest(f"a/{f}") == digest(f"b/{f}")


def test_fail_fast_dry_run_shard_and_list(folder):
    r = run("pool", "in/bad1.png", "in/img001.png", "--fail-fast", "-j", "1")
    assert r.exit_code == 1 and not os.path.exists("in/img001_max.png")
    r = run("pool", "in", "-o", "dry", "--dry-run")
    assert r.exit_code == 0 and not os.path.exists("dry")
    assert "in/img001.png -> dry/img001_max.png" in r.stdout
    shards = [run("pool", "in", "--dry-run", "--shard", f"{i}/3", "-o", "s").stdout.splitlines()
              for i in (1, 2, 3)]
    full = run("pool", "in", "--dry-run", "-o", "s").stdout.splitlines()
    assert sorted(sum(shards, [])) == sorted(full) and all(len(s) in (49, 50) for s in shards)
    open("list.txt", "w").write("# two files\nin/img001.png\n\nin/img002.png\n")
    r = run("pool", "--from-list", "list.txt", "-o", "l", "-q")
    assert r.exit_code == 0 and sorted(os.listdir("l")) == ["img001_max.png", "img002_max.png"]
    r = run("stats", "--from-list", "-", "--json", input="in/img003.png\n")
    assert json_lines(r)[0]["input"] == "in/img003.png"


def test_name_template_format_and_collisions(folder):
    r = run("pool", "in/img001.png", "-o", "t", "--name", "{parent}-{index}-{stem}.{op}{ext}",
            "--format", "npy", "-q")
    assert r.exit_code == 0 and os.listdir("t") == ["in-0-img001.max.npy"]
    r = run("pool", "in/img001.png", "in/img002.png", "-o", "t", "--name", "same{ext}")
    assert r.exit_code == 2 and "would both write" in r.output
    r = run("pool", "in/img001.png", "--name", "{nope}")
    assert r.exit_code == 2 and "{stem}" in r.output
    before = digest("in/img001.png")
    r = run("pool", "in/img001.png", "--name", "{name}", "--force")
    assert r.exit_code == 2 and "overwrite an input" in r.output
    assert digest("in/img001.png") == before


def test_glob_and_stdin(folder):
    r = run("pool", "in/img00*.png", "-o", "g", "-q")
    assert r.exit_code == 0 and len(os.listdir("g")) == 7  # img000, 004, 008 are in sub/
    r = run("pool", "in/zzz*.png")
    assert r.exit_code == 1 and "no files match" in r.output
    data = open("in/img001.png", "rb").read()
    r = run("pool", "-", "-o", "from_stdin.png", "-q", input=data)
    assert r.exit_code == 0 and os.path.exists("from_stdin.png")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_only_complete_outputs(tmp_path, sig):
    src = np.asarray(Image.open(os.path.join(SAMPLES, "astronaut.png")))
    os.makedirs(tmp_path / "in")
    for i in range(40):
        Image.fromarray(np.roll(src, i, axis=1)).save(tmp_path / "in" / f"a{i:02d}.png")
    exe = [sys.executable, "-m", "poolcli"]
    p = subprocess.Popen(exe + ["pool", "--op", "softpool", "-k", "3", "-s", "1", "in", "-o",
                                "out", "-j", "2", "-q", "--compress-level", "9"],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and not (tmp_path / "out").exists():
        time.sleep(0.05)
    time.sleep(0.5)
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode in (130, 1, 0), err
    files = [f for d, _, fs in os.walk(tmp_path) for f in fs]
    assert not [f for f in files if f.endswith(".part")]
    for f in os.listdir(tmp_path / "out"):
        arr = imageio.read_image(str(tmp_path / "out" / f)).array  # every output is complete
        assert arr.shape == (510, 510, 3)
    if p.returncode == 130:
        assert b"interrupted" in err


# ------------------------------------------------------------------------------------------------
# Re-runs, stdout, one record per input
# ------------------------------------------------------------------------------------------------


def _tiny_folder(n=4):
    os.makedirs("in", exist_ok=True)
    rng = np.random.default_rng(3)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).save(f"in/p{i}.png")


@pytest.mark.parametrize("command", [["pool"], ["norm"], ["chain", "pool"]],
                         ids=["pool", "norm", "chain"])
def test_an_existing_output_is_exit_2_before_reading_then_skip_existing_resumes(
        tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    _tiny_folder()
    def cmd(*flags):  # options before a chain's stages
        if command[0] == "chain":
            return [command[0], "-i", "in", "-o", "out", *flags, *command[1:]]
        return [command[0], "in", "-o", "out", *flags]

    assert run(*cmd("-q")).exit_code == 0
    os.remove(os.path.join("out", sorted(os.listdir("out"))[1]))  # an interrupted batch
    kept = {f: digest(os.path.join("out", f)) for f in os.listdir("out")}
    r = run(*cmd("-q"))  # the same command again: same status everywhere, nothing touched
    assert r.exit_code == 2 and "exist" in r.output and "--skip-existing" in r.output
    assert {f: digest(os.path.join("out", f)) for f in os.listdir("out")} == kept
    r = run(*cmd("--skip-existing", "--json", "-q"))
    assert r.exit_code == 0, r.output
    recs = json_lines(r)
    assert recs[-1]["summary"] == {**recs[-1]["summary"], "ok": 1, "skipped": 3, "failed": 0}
    skipped = [x for x in recs[:-1] if "skipped" in x]
    assert len(skipped) == 3 and all(x["skipped"].endswith("exists") for x in skipped)
    assert [x["input"] for x in recs[:-1]] == sorted(x["input"] for x in recs[:-1])  # in order
    assert {f: digest(os.path.join("out", f)) for f in kept} == kept  # left alone
    assert len(os.listdir("out")) == 4


def test_dry_run_marks_existing_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _tiny_folder(2)
    assert run("pool", "in/p0.png", "-o", "out", "-q").exit_code == 0
    r = run("pool", "in", "-o", "out", "--dry-run")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0].endswith("out/p0_max.png (exists: needs --force or --skip-existing)")
    assert lines[1].endswith("out/p1_max.png")
    r = run("pool", "in", "-o", "out", "--dry-run", "--json", "--skip-existing")
    assert [x["exists"] for x in json_lines(r)] == [["out/p0_max.png"], []]


def test_force_and_skip_existing_exclude_each_other(workdir):
    r = run("pool", "chelsea.png", "--force", "--skip-existing")
    assert r.exit_code == 2 and "exclude" in r.output


def test_output_to_stdout(workdir):
    from poolcli.ops import max_pool2d as mp

    r = run("pool", "--op", "max", "-k", "2", "chelsea.png", "-o", "-", "--format", "png")
    assert r.exit_code == 0
    assert r.stdout_bytes.startswith(b"\x89PNG")
    import io

    got = np.asarray(Image.open(io.BytesIO(r.stdout_bytes)))
    np.testing.assert_array_equal(got, mp(np.asarray(Image.open("chelsea.png")), 2))
    assert "chelsea.png" in r.stderr  # the table went to stderr
    assert not os.path.exists("-")
    r = run("pool", "chelsea.png", "camera.png", "-o", "-")
    assert r.exit_code == 2 and "one result" in r.output and not os.path.exists("-")
    r = run("pool", "chelsea.png", "-o", "-", "--json")
    assert r.exit_code == 2
    r = run("pool", "chelsea.png", "-o", "-", "--save-indices")
    assert r.exit_code == 2


def test_output_suffix_and_format_must_agree(workdir):
    r = run("pool", "chelsea.png", "-o", "x.jpg", "--format", "png")
    assert r.exit_code == 2 and "JPEG" in r.output and not os.path.exists("x.jpg")
    assert run("pool", "chelsea.png", "-o", "x.jpg", "--format", "jpeg", "-q").exit_code == 0


def test_one_output_file_for_several_inputs_is_a_usage_error(workdir):
    r = run("pool", "chelsea.png", "camera.png", "-o", "one.png")
    assert r.exit_code == 2 and "one.png names one file" in r.output
    assert not os.path.exists("one.png")


def test_json_has_a_record_for_every_input_in_order(workdir):
    open("bad.png", "wb").write(b"not a png")
    r = run("pool", "camera.png", "bad.png", "chelsea.png", "nothing*.png", "--json", "-q",
            "-j", "2")
    assert r.exit_code == 1
    recs = json_lines(r)
    assert [x.get("input") for x in recs[:-1]] == ["nothing*.png", "camera.png", "bad.png",
                                                    "chelsea.png"]
    assert set(recs[0]) == {"input", "error"} and "no files match" in recs[0]["error"]
    assert set(recs[2]) == {"input", "error"} and "bad.png" in recs[2]["error"]
    assert recs[-1]["summary"]["failed"] == 2 and recs[-1]["summary"]["ok"] == 2


def test_poolcli_never_reprocesses_its_own_outputs(tmp_path, monkeypatch):
    """pool --op avg photos/ after pool --op max photos/ must not make img_max_avg.png: every
    output says in its metadata that poolcli wrote it, and expansion leaves those out."""
    monkeypatch.chdir(tmp_path)
    _tiny_folder(2)
    assert run("pool", "--op", "max", "in", "-q").exit_code == 0
    r = run("pool", "--op", "avg", "in", "--json")
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir("in")) == ["p0.png", "p0_avg.png", "p0_max.png", "p1.png",
                                        "p1_avg.png", "p1_max.png"]
    assert "left out 2 image(s) poolcli wrote" in r.stderr
    assert json_lines(r)[-1]["summary"]["skipped"] == 2
    # named on the command line, or with --include-outputs, they are inputs like any other
    assert run("pool", "--op", "min", "in/p0_max.png", "-q").exit_code == 0
    r = run("pool", "--op", "lp", "in", "--include-outputs", "--dry-run")
    assert "in/p0_max.png -> in/p0_max_lp.png" in r.stdout


def test_stats_tells_how_a_file_was_made(workdir):
    assert run("pool", "--op", "stochastic", "-k", "3", "--seed", "4", "chelsea.png",
               "-q").exit_code == 0
    r = run("stats", "chelsea_stochastic.png", "--json")
    made = json_lines(r)[0]["provenance"]
    assert made["command"] == "pool" and made["op"] == "stochastic"
    assert made["params"]["kernel"] == [3, 3] and made["params"]["seed"] == 4
    assert made["software"].startswith("poolcli ")
    assert json_lines(run("stats", "chelsea.png", "--json"))[0]["provenance"] is None
