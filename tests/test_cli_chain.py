"""`poolcli chain`: stages on the command line and from pipeline files equal the standalone
commands and the core composed by hand."""

import json

import numpy as np
from PIL import Image

from helpers import json_lines, run
from poolcli.ops import instance_norm, max_pool2d, max_unpool2d


def test_chain_equals_standalone_commands(workdir):
    r = run("chain", "-i", "chelsea.png", "-o", "c", "--format", "npy", "-q",
            "pool", "--op", "max", "-k", "3", "-s", "2", "norm", "--op", "instance", "unpool")
    assert r.exit_code == 0, r.output
    chained = np.load("c/chelsea_max-instance-unpool.npy")
    assert run("pool", "-k", "3", "-s", "2", "--save-indices", "chelsea.png", "--format", "npy",
               "-q").exit_code == 0
    assert run("norm", "chelsea_max.npy", "-q", "--format", "npy").exit_code == 0
    assert run("unpool", "chelsea_max_instance.npy", "--indices", "chelsea_max.indices.npz",
               "-o", "three.npy", "-q").exit_code == 0
    np.testing.assert_array_equal(chained, np.load("three.npy"))
    # and both equal the core composed by hand
    x = np.asarray(Image.open("chelsea.png"))
    v, i = max_pool2d(x, 3, 2, return_indices=True)
    ref = max_unpool2d(instance_norm(v), i, 3, 2, output_size=x.shape[:2])
    np.testing.assert_array_equal(chained, ref)


def test_chain_from_json_and_toml_files(workdir):
    json.dump({"stage": [{"command": "pool", "op": "avg", "kernel": "2x3"},
                         {"command": "norm", "op": "group", "groups": 1}]}, open("p.json", "w"))
    open("p.toml", "w").write('[[stage]]\ncommand = "pool"\nop = "avg"\nkernel = "2x3"\n'
                              '[[stage]]\ncommand = "norm"\nop = "group"\ngroups = 1\n')
    for f in ("p.json", "p.toml"):
        r = run("chain", "-i", "camera.png", "--pipeline", f, "--json", "-q", "--force",
                "--format", "npy")
        assert r.exit_code == 0, r.output
        rec = json_lines(r)[0]
        assert [s["op"] for s in rec["stages"]] == ["avg", "group"]
        assert rec["shape_out"] == [256, 170, 1]
    open("bad.toml", "w").write("[[stage]]\nop = 'max'\n")
    r = run("chain", "-i", "camera.png", "--pipeline", "bad.toml")
    assert r.exit_code == 2 and "command" in r.output
    r = run("chain", "-i", "camera.png", "pool", "-k", "0")
    assert r.exit_code == 2
