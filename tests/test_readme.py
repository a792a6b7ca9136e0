"""The README says what poolcli does: its runnable blocks are run and compared, and its claims
about the pictures in docs/ are checked against the files."""

import os
import re
import shlex
import shutil
import subprocess

import pytest

from helpers import POOLCLI, ROOT, SAMPLES

README = (ROOT / "README.md").read_text(encoding="utf-8")


def runnable_blocks():
    """(commands with their expected output) of every ```console block marked runnable."""
    blocks = re.findall(r"<!-- runnable[^>]*-->\n```console\n(.*?)```", README, re.S)
    out = []
    for block in blocks:
        steps, current = [], None
        for line in block.splitlines():
            if line.startswith("$ "):
                current = [line[2:], []]
                steps.append(current)
            elif current is not None:
                current[1].append(line)
        out.extend((cmd, "\n".join(lines).rstrip()) for cmd, lines in steps)
    return out


BLOCKS = runnable_blocks()


def test_the_readme_has_runnable_blocks():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("command,expected", BLOCKS, ids=[c[:40] for c, _ in BLOCKS])
def test_a_runnable_block_prints_what_the_readme_shows(tmp_path, command, expected):
    shutil.copytree(SAMPLES, tmp_path / "sample_images")
    argv = shlex.split(command)
    assert argv[0] == "poolcli"
    env = dict(os.environ, COLUMNS="100")  # not a terminal: nothing wraps
    p = subprocess.run(POOLCLI + argv[1:], cwd=tmp_path, capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    got = "\n".join(line.rstrip() for line in p.stdout.splitlines()).rstrip()
    assert got == "\n".join(line.rstrip() for line in expected.splitlines())


def test_the_gallery_command_is_the_one_that_made_the_picture():
    script = (ROOT / "scripts" / "make_docs.sh").read_text(encoding="utf-8")
    made = re.search(r"poolcli compare sample_images/chelsea\.png.*?--force", script, re.S)
    made = " ".join(made.group(0).replace("\\\n", " ").replace("$d/", "docs/").split())
    shown = re.search(r"Made by `(poolcli compare [^`]+)`", README).group(1)
    assert " ".join(shown.split()) + " --force" == made


def test_the_unpooling_table_states_the_real_sizes():
    from PIL import Image

    pooled = re.search(r"pooled 4x4 \((\d+)x(\d+)\)", README)
    unpooled = re.search(r"unpooled \((\d+)x(\d+)\)", README)
    with Image.open(ROOT / "docs" / "chelsea_max.png") as im:
        assert im.size == (int(pooled.group(1)), int(pooled.group(2)))
    with Image.open(ROOT / "docs" / "chelsea_unpool.png") as im:
        assert im.size == (int(unpooled.group(1)), int(unpooled.group(2)))
    with Image.open(SAMPLES / "chelsea.png") as im:
        assert im.size == (int(unpooled.group(1)), int(unpooled.group(2)))
