"""poolcli on S3: real ``poolcli`` processes against a real S3 API (moto's server, started by the
``s3`` fixture of tests/test_imageio_store.py on 127.0.0.1), configured only through the standard
AWS variables. Outputs are byte-identical to the same run on local files."""

from __future__ import annotations

import json
import pathlib
import shutil

import pytest

from helpers import SAMPLES, run, run_process
from test_imageio_store import S3, free_port, s3, s3_env  # noqa: F401  (fixtures)

CAMERA = (SAMPLES / "camera.png").read_bytes()
CHELSEA = (SAMPLES / "chelsea.png").read_bytes()


def poolcli(s3: S3, *args, env=None):
    return run_process(*args, env=env or s3.env, timeout=120)


def one_line_error(r) -> str:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


def local_result(tmp_path, *args, flag=(), name="camera.png", data=CAMERA) -> dict:
    """``{file name: bytes}`` of the same command run on a local copy of the input (given
    after ``flag``: ``-i`` for chain)."""
    work = tmp_path / "local"
    work.mkdir(exist_ok=True)
    (work / name).write_bytes(data)
    r = run_process(*flag, str(work / name), *args, "-o", str(work / "out"), "-q", "--force")
    assert r.returncode == 0, r.stderr
    return {p.name: p.read_bytes() for p in (work / "out").iterdir()}


def test_pool_s3_to_s3_and_to_local_is_byte_identical(s3, tmp_path):
    t = s3.prefix()
    s3.put(f"{t}/in/camera.png", CAMERA)
    expected = local_result(tmp_path, "--op", "max", "--save-indices", flag=("pool",))
    r = poolcli(s3, "pool", "--op", "max", "--save-indices", f"{t}/in/camera.png",
                "-o", f"{t}/out", "--json", "-q")
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout.splitlines()[0])
    assert record["input"] == f"{t}/in/camera.png"
    assert record["output"] == f"{t}/out/camera_max.png"
    assert s3.ls(f"{t}/out") == [f"{t}/out/camera_max.indices.npz", f"{t}/out/camera_max.png"]
    for name, data in expected.items():
        assert s3.cat(f"{t}/out/{name}") == data, name
    r = poolcli(s3, "pool", "--op", "max", f"{t}/in/camera.png", "-o", str(tmp_path / "d"),
                "-q")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "d" / "camera_max.png").read_bytes() == expected["camera_max.png"]
    r = poolcli(s3, "stats", f"{t}/out/camera_max.png", "--json")  # what made it, from S3
    assert r.returncode == 0 and '"op": "max"' in r.stdout, r.stderr


def test_prefix_and_glob_inputs(s3, tmp_path):
    t = s3.prefix()
    for name, data in (("camera.png", CAMERA), ("chelsea.png", CHELSEA), ("notes.txt", b"x")):
        s3.put(f"{t}/in/{name}", data)
    r = poolcli(s3, "pool", "--op", "avg", f"{t}/in", "-o", f"{t}/out", "-q")
    assert r.returncode == 0, r.stderr
    assert s3.ls(f"{t}/out") == [f"{t}/out/camera_avg.png", f"{t}/out/chelsea_avg.png"]
    # the outputs are poolcli's: a second run over the whole bucket prefix leaves them out
    r = poolcli(s3, "pool", "--op", "min", f"{t}/", "-r", "-o", str(tmp_path / "all"))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "all" / "in").iterdir()) == [
        "camera_min.png", "chelsea_min.png"]
    assert not (tmp_path / "all" / "out").exists()
    assert "left out 2 image(s) poolcli wrote" in r.stderr
    r = poolcli(s3, "pool", f"{t}/in/ca*.png", "-o", str(tmp_path / "g"), "-q")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["camera_max.png"]


def test_existing_objects_need_force_or_skip(s3):
    t = s3.prefix()
    s3.put(f"{t}/camera.png", CAMERA)
    s3.put(f"{t}/out/camera_max.png", b"not ours")
    r = poolcli(s3, "pool", f"{t}/camera.png", "-o", f"{t}/out", "-q")
    assert r.returncode == 2
    assert f"{t}/out/camera_max.png exists; use --force" in one_line_error(r)
    assert s3.cat(f"{t}/out/camera_max.png") == b"not ours"
    r = poolcli(s3, "pool", f"{t}/camera.png", "-o", f"{t}/out", "--skip-existing", "--json")
    assert r.returncode == 0 and s3.cat(f"{t}/out/camera_max.png") == b"not ours"
    r = poolcli(s3, "pool", f"{t}/camera.png", "-o", f"{t}/out", "--force", "-q")
    assert r.returncode == 0 and s3.cat(f"{t}/out/camera_max.png").startswith(b"\x89PNG")
    r = poolcli(s3, "pool", f"{t}/camera.png", "-o", f"{t}/camera.png", "--force", "-q")
    assert r.returncode == 2 and "would overwrite an input" in r.stderr


def test_an_object_created_after_the_plan_is_not_replaced(s3_env, monkeypatch):
    """The race the plan cannot see: another writer creates the output between the plan's
    check and the write. The conditional put refuses it; the run fails that image (exit 1)."""
    t = s3_env.prefix()
    s3_env.put(f"{t}/camera.png", CAMERA)
    _race_for_the_image(s3_env, monkeypatch, t)
    r = run("pool", f"{t}/camera.png", "-o", f"{t}/out", "-q", "-j", "1")
    assert r.exit_code == 1
    assert f"{t}/out/camera_max.png: exists (use --force to replace)" in r.output
    assert s3_env.cat(f"{t}/out/camera_max.png") == b"the other writer's"


def _race_for_the_image(s3_env, monkeypatch, t: str) -> None:
    """Another writer creates ``{t}/out/camera_max.png`` right after the plan looked."""
    import poolcli.app.plan as plan_module

    real = plan_module.make_plan

    def plan_then_race(*args, **kwargs):
        planned = real(*args, **kwargs)
        s3_env.put(f"{t}/out/camera_max.png", b"the other writer's")
        return planned

    monkeypatch.setattr(plan_module, "make_plan", plan_then_race)


@pytest.mark.parametrize("side, suffix", [
    ("--indices-png", ".selected.png"),
    ("--save-indices", ".indices.npz"),
], ids=["selected-png", "index-map"])
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_failed_image_leaves_no_side_file_on_s3(s3_env, monkeypatch, jobs, side, suffix):
    """Side files are stored before the image; when the image then fails (another writer
    created its object after the plan), the runner deletes from the store what the job had
    committed, as it deletes local files: a failed image leaves nothing of its own."""
    t = s3_env.prefix()
    s3_env.put(f"{t}/camera.png", CAMERA)
    s3_env.put(f"{t}/chelsea.png", CHELSEA)
    _race_for_the_image(s3_env, monkeypatch, t)
    r = run("pool", f"{t}/camera.png", f"{t}/chelsea.png", "-o", f"{t}/out", side, "--json",
            "-j", jobs)
    assert r.exit_code == 1
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert records[0]["error"].endswith(
        f"{t}/out/camera_max.png: exists (use --force to replace)")
    assert (records[-1]["summary"]["ok"], records[-1]["summary"]["failed"]) == (1, 1)
    assert s3_env.ls(f"{t}/out") == sorted([f"{t}/out/camera_max.png",
                                            f"{t}/out/chelsea_max{suffix}",
                                            f"{t}/out/chelsea_max.png"])
    assert s3_env.cat(f"{t}/out/camera_max.png") == b"the other writer's"


def test_unpool_with_an_s3_index_map(s3, tmp_path):
    t = s3.prefix()
    s3.put(f"{t}/camera.png", CAMERA)
    r = poolcli(s3, "pool", "--save-indices", f"{t}/camera.png", "-q")  # beside the input
    assert r.returncode == 0, r.stderr
    r = poolcli(s3, "unpool", f"{t}/camera_max.png", "--indices", f"{t}/camera_max.indices.npz",
                "-o", f"{t}/u.png", "-q")
    assert r.returncode == 0, r.stderr
    local = tmp_path / "l"
    local.mkdir()
    (local / "camera.png").write_bytes(CAMERA)
    assert run_process("pool", "--save-indices", local / "camera.png", "-q").returncode == 0
    r = run_process("unpool", local / "camera_max.png", "--indices",
                    local / "camera_max.indices.npz", "-o", local / "u.png", "-q")
    assert r.returncode == 0, r.stderr
    assert s3.cat(f"{t}/u.png") == (local / "u.png").read_bytes()


def test_norm_fit_to_s3_stats_then_inference_from_it(s3, tmp_path):
    t = s3.prefix()
    s3.put(f"{t}/a.png", CAMERA)
    s3.put(f"{t}/b.png", CAMERA[::1])
    r = poolcli(s3, "norm", "--op", "batch", "--fit", "--save-stats", f"{t}/s.json",
                f"{t}/a.png", f"{t}/b.png", "-o", f"{t}/fit", "--format", "npy", "-q")
    assert r.returncode == 0, r.stderr
    stats = json.loads(s3.cat(f"{t}/s.json"))
    assert stats["images"] == 2 and len(stats["mean"]) == 1
    r = poolcli(s3, "norm", "--op", "batch", "--stats", f"{t}/s.json", f"{t}/a.png", "-o",
                f"{t}/inf", "--format", "npy", "-q")
    assert r.returncode == 0, r.stderr
    assert s3.ls(f"{t}/inf") == [f"{t}/inf/a_batch.npy"]
    r = poolcli(s3, "norm", "--op", "batch", "--fit", "--save-stats", f"{t}/s.json",
                f"{t}/a.png", "-o", f"{t}/fit2", "-q")
    assert r.returncode == 2 and f"{t}/s.json exists" in r.stderr
    r = poolcli(s3, "norm", "--op", "batch", "--stats", f"{t}/nope.json", f"{t}/a.png")
    assert r.returncode == 2 and one_line_error(r).endswith(f"{t}/nope.json: no such object")


def test_chain_with_an_s3_pipeline_and_from_list_on_s3(s3, tmp_path):
    t = s3.prefix()
    s3.put(f"{t}/camera.png", CAMERA)
    s3.put(f"{t}/chelsea.png", CHELSEA)
    pipeline = json.dumps({"stage": [{"command": "pool", "op": "avg", "kernel": "2x3"}]})
    s3.put(f"{t}/p.json", pipeline.encode())
    s3.put(f"{t}/list.txt", f"# inputs\n{t}/camera.png\n{t}/chelsea.png\n".encode())
    r = poolcli(s3, "chain", "--pipeline", f"{t}/p.json", "--from-list", f"{t}/list.txt",
                "-o", f"{t}/out", "-q")
    assert r.returncode == 0, r.stderr
    assert s3.ls(f"{t}/out") == [f"{t}/out/camera_avg.png", f"{t}/out/chelsea_avg.png"]
    (tmp_path / "p.json").write_text(pipeline)
    expected = local_result(tmp_path, "--pipeline", tmp_path / "p.json", flag=("chain", "-i"))
    assert s3.cat(f"{t}/out/camera_avg.png") == expected["camera_avg.png"]


def test_missing_bucket_and_unreachable_endpoint_are_one_line(s3, tmp_path):
    missing = run_process("pool", tmp_path / "nope.png", "-q")
    assert missing.returncode == 1
    r = poolcli(s3, "pool", "s3://no-such-bucket/x.png", "-q")
    assert r.returncode == missing.returncode
    assert one_line_error(r) == "poolcli: error: s3://no-such-bucket/x.png: no such bucket"
    env = {**s3.env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    r = poolcli(s3, "pool", "s3://bucket/x.png", "-q", env=env)
    assert r.returncode == missing.returncode
    # the plan asks first whether the output beside it exists: that URL is named
    assert one_line_error(r).startswith("poolcli: error: s3://bucket/x_max.png: cannot reach "
                                        "the store (Could not connect to the endpoint URL")
    r = poolcli(s3, "pool", "s3://bucket/dir", "-q", env=env)  # a prefix: asked in the plan
    assert r.returncode == missing.returncode
    assert "s3://bucket/dir: cannot reach the store" in one_line_error(r)


def test_file_urls_work_like_paths(tmp_path):
    shutil.copy(SAMPLES / "camera.png", tmp_path / "camera.png")
    r = run_process("pool", f"file://{tmp_path}/camera.png", "-o", f"file://{tmp_path}/o", "-q")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o" / "camera_max.png").exists()
    r = run_process("pool", f"file://{tmp_path}/camera.png", "-o", tmp_path / "camera.png")
    assert r.returncode == 2 and "would overwrite an input" in r.stderr


def test_compare_sheet_to_s3_file_and_prefix_is_the_local_sheet(s3, tmp_path):
    """compare's -o takes a URL like every other -o: a key, or a prefix the sheet goes under
    with its default name; an existing sheet is refused without --force; nothing local is
    created (a URL is not a directory to make)."""
    t = s3.prefix()
    s3.put(f"{t}/in/camera.png", CAMERA)
    (tmp_path / "camera.png").write_bytes(CAMERA)
    sheet = ["compare", "--ops", "max,avg", "-k", "4", "-q"]
    r = run_process(*sheet, str(tmp_path / "camera.png"), "-o", str(tmp_path / "local.png"))
    assert r.returncode == 0, r.stderr
    expected = (tmp_path / "local.png").read_bytes()
    r = poolcli(s3, *sheet, f"{t}/in/camera.png", "-o", f"{t}/sheets/one.png")
    assert r.returncode == 0, r.stderr
    assert s3.cat(f"{t}/sheets/one.png") == expected
    r = poolcli(s3, *sheet, f"{t}/in/camera.png", "-o", f"{t}/sheets/")
    assert r.returncode == 0, r.stderr
    assert s3.cat(f"{t}/sheets/camera_compare.png") == expected
    r = poolcli(s3, *sheet, f"{t}/in/camera.png", "-o", f"{t}/sheets/one.png")
    assert r.returncode == 2
    assert one_line_error(r).endswith(f"{t}/sheets/one.png exists; use --force to replace")
    r = poolcli(s3, *sheet, f"{t}/in/camera.png", "-o", f"{t}/sheets/one.png", "--force")
    assert r.returncode == 0, r.stderr
    assert not list(tmp_path.glob("s3*")) and not pathlib.Path("s3:").exists()
