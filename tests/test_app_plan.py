"""`poolcli.app.plan`: input expansion, output naming (--name templates), the template check,
collisions between everything a run writes and reads, and --shard. Real files in tmp_path;
every expected name and message is worked out by hand from the documented rules."""

import os

import pytest

from poolcli.app.plan import (DEFAULT_TEMPLATE, MAX_FIELD_WIDTH, STDIN, TEMPLATE_FIELDS,
                              check_template, expand_inputs, make_plan, output_name)
from poolcli.errors import ExitStatus, UsageError


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    """An empty temporary current directory; ``touch`` makes files (and their directories)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def touch(*paths):
    for path in paths:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(b"not decoded by the plan")


def sources(jobs):
    return [job.source for job in jobs]


def refused(**kw) -> str:
    """make_plan(**kw) raises a UsageError (exit 2); its message."""
    with pytest.raises(UsageError) as info:
        make_plan(**kw)
    assert info.value.exit_status == ExitStatus.USAGE
    return str(info.value)


# ----------------------------------------------------------------------------------------------
# expand_inputs
# ----------------------------------------------------------------------------------------------


def test_plain_paths_are_kept_as_given_even_missing_or_odd(cwd):
    touch("b.png", "notes.txt")
    jobs, unsupported, missing = expand_inputs(["b.png", "gone.png", "notes.txt"])
    # kept so that reading them gives an error naming them
    assert sources(jobs) == ["b.png", "gone.png", "notes.txt"]
    assert [job.index for job in jobs] == [0, 1, 2]
    assert (unsupported, missing) == (0, [])


def test_a_directory_gives_its_images_sorted_and_counts_the_rest(cwd):
    touch("d/b.png", "d/A.JPG", "d/c.tif", "d/notes.txt", "d/.hidden.png", "d/sub/deep.png")
    jobs, unsupported, missing = expand_inputs(["d"])
    # sorted by name (upper case first), suffixes in any case; hidden files and
    # sub-directories are left out without being counted; notes.txt is counted
    assert sources(jobs) == ["d/A.JPG", "d/b.png", "d/c.tif"]
    assert all(job.rel_dir == "" for job in jobs)
    assert (unsupported, missing) == (1, [])


def test_recursive_walks_sub_directories_and_records_where_each_image_was(cwd):
    touch("d/a.png", "d/notes.txt", "d/sub/c.png", "d/sub/x.txt", "d/sub/deeper/e.npy",
          "d/b_dir/f.bmp", "d/.git/ignored.png")
    jobs, unsupported, missing = expand_inputs(["d"], recursive=True)
    # top-down, directories in name order; hidden files are skipped (not hidden directories)
    assert [(job.source, job.rel_dir) for job in jobs] == [
        ("d/a.png", ""),
        (os.path.join("d", ".git", "ignored.png"), ".git"),
        (os.path.join("d", "b_dir", "f.bmp"), "b_dir"),
        (os.path.join("d", "sub", "c.png"), "sub"),
        (os.path.join("d", "sub", "deeper", "e.npy"), os.path.join("sub", "deeper")),
    ]
    assert (unsupported, missing) == (2, [])


def test_a_directory_with_an_image_suffix_is_kept_as_a_file(cwd):
    os.mkdir("pics.png")
    touch("pics.png/inside.png")
    jobs, _, _ = expand_inputs(["pics.png"])
    assert sources(jobs) == ["pics.png"]  # reading it says "is a directory"


def test_globs_are_expanded_here_sorted_and_report_patterns_matching_nothing(cwd):
    touch("in/img2.png", "in/img10.png", "in/img1.jpg", "in/other.png", "dirs/d1/x.png",
          "dirs/d1/y.txt")
    jobs, unsupported, missing = expand_inputs(["in/img*.png", "in/zzz*.png", "dirs/d*"])
    # sorted as strings; a matched directory is expanded like a directory argument
    assert sources(jobs) == ["in/img10.png", "in/img2.png", "dirs/d1/x.png"]
    assert missing == ["in/zzz*.png"]
    assert unsupported == 1


def test_a_file_whose_name_looks_like_a_pattern_is_not_expanded(cwd):
    touch("shot[1].png", "shot1.png")
    jobs, _, missing = expand_inputs(["shot[1].png"])
    assert sources(jobs) == ["shot[1].png"] and missing == []
    os.remove("shot[1].png")
    jobs, _, _ = expand_inputs(["shot[1].png"])  # now a pattern: [1] matches "1"
    assert sources(jobs) == ["shot1.png"]


def test_double_star_needs_recursive(cwd):
    touch("t/a.png", "t/u/b.png", "t/u/v/c.png")
    jobs, _, _ = expand_inputs(["t/**/*.png"], recursive=True)
    assert sources(jobs) == ["t/a.png", "t/u/b.png", "t/u/v/c.png"]
    jobs, _, _ = expand_inputs(["t/**/*.png"])  # ** is * without -r: one level
    assert sources(jobs) == ["t/u/b.png"]


def test_stdin_is_one_job_in_its_place(cwd):
    touch("a.png", "d/b.png")
    jobs, _, _ = expand_inputs(["a.png", STDIN, "d"])
    assert sources(jobs) == ["a.png", "-", "d/b.png"]
    assert [job.index for job in jobs] == [0, 1, 2]


def test_make_plan_counts_and_refuses_empty_inputs(cwd):
    touch("d/a.png", "d/notes.txt", "empty/readme.md")
    plan = make_plan(["d", "none*.png"], op_label="max")
    assert sources(plan.jobs) == ["d/a.png"]
    assert plan.unsupported == 1 and plan.missing == ["none*.png"] and plan.total == 1
    # only unmatched patterns: no error here (the CLI reports each pattern, exit 1)
    assert make_plan(["none*.png"], op_label="max").jobs == []
    assert "no input images found" in refused(items=["empty"], op_label="max")
    assert "no inputs given" in refused(items=[], op_label="max")


# ----------------------------------------------------------------------------------------------
# Output names and --name templates
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source, op, fmt, expected", [
    ("in/photo.jpg", "max", None, "photo_max.jpg"),  # the input's suffix
    ("in/photo.jpg", "max", "npy", "photo_max.npy"),  # --format changes it
    ("photo.jpg", "avg", ".TIF", "photo_avg.tif"),  # lower case, one dot
    ("scan.raw", "max", None, "scan_max.png"),  # not an image suffix: png
    ("README", "max", None, "README_max.png"),  # no suffix at all
    ("-", "instance", None, "stdin_instance.png"),  # stdin is "stdin.png"
    ("a.b.c.png", "lp", None, "a.b.c_lp.png"),  # only the last suffix goes
])
def test_default_output_name(source, op, fmt, expected):
    assert output_name(source, op, fmt) == expected
    assert DEFAULT_TEMPLATE == "{stem}_{op}{ext}"


def test_template_with_every_field_and_format_specs():
    assert set(TEMPLATE_FIELDS) == {"stem", "ext", "op", "name", "parent", "index"}
    template = "{index:03d}-{parent}-{name}-{stem}.{op}{ext}"
    assert check_template(template) is None
    assert output_name("shots/cat.v2.png", "lp", "tif", template, 7) == \
        "007-shots-cat.v2.png-cat.v2.lp.tif"
    assert output_name("a/b/img.png", "max", None, "{parent:>4}_{stem:.2}_{index:x}{ext}", 255) \
        == "   b_im_ff.png"
    assert output_name("img.png", "max", None, "{index:0>4}{ext}", 12) == "0012.png"


def test_parent_of_a_bare_name_is_the_current_directory(cwd):
    assert output_name("a.png", "max", None, "{parent}{ext}") == cwd.name + ".png"
    assert output_name(STDIN, "max", None, "[{parent}]{ext}") == "[].png"  # stdin: no parent


def test_make_plan_names_outputs_beside_inputs_in_a_directory_or_one_file(cwd):
    touch("in/a.png", "in/sub/c.jpg", "b.png")
    plan = make_plan(["in/a.png", STDIN], op_label="max")
    assert [job.output for job in plan.jobs] == ["in/a_max.png", "./stdin_max.png"]
    plan = make_plan(["in"], op_label="avg", output="out", recursive=True, fmt="npy")
    assert [job.output for job in plan.jobs] == ["out/a_avg.npy",
                                                 os.path.join("out", "sub", "c_avg.npy")]
    plan = make_plan(["b.png"], op_label="max", output="result.tif")
    assert [job.output for job in plan.jobs] == ["result.tif"]
    message = refused(items=["b.png", "in/a.png"], op_label="max", output="result.tif")
    assert message == ("-o result.tif names one file, but there are 2 inputs; "
                       "give a directory")
    os.mkdir("looks.png")  # an existing directory with an image suffix is a directory
    plan = make_plan(["b.png", "in/a.png"], op_label="max", output="looks.png")
    assert [job.output for job in plan.jobs] == ["looks.png/b_max.png", "looks.png/a_max.png"]


def test_make_plan_template_index_is_the_position_in_the_expanded_list(cwd):
    touch("d/x.png", "d/y.png", "z.png")
    plan = make_plan(["z.png", "d"], op_label="max", output="o", template="{index:02d}_{stem}{ext}")
    assert [job.output for job in plan.jobs] == ["o/00_z.png", "o/01_x.png", "o/02_y.png"]


def test_names_only_when_asked(cwd):
    touch("a.png")
    plan = make_plan(["a.png"], op_label="stats", name_outputs=False)
    assert plan.jobs[0].output is None and plan.writes() == []


# ----------------------------------------------------------------------------------------------
# check_template
# ----------------------------------------------------------------------------------------------

FIELDS = "fields: {stem}, {ext}, {op}, {name}, {parent}, {index}"


@pytest.mark.parametrize("template", [DEFAULT_TEMPLATE, "{index:03d}_{stem}{ext}", "{name}",
                                      "{stem}.npy", "{stem:.3}_{op}{ext}", "{op}/{stem}{ext}",
                                      "{{literal}}{ext}", "{index:064d}{ext}"])
def test_good_templates(template):
    assert check_template(template) is None


@pytest.mark.parametrize("template, problem", [
    # attribute and item access would reach into Python objects: refused as unknown fields
    ("{stem.__class__}{ext}", f"unknown field {{stem.__class__}}; {FIELDS}"),
    ("{stem.__class__.__mro__}{ext}", "unknown field {stem.__class__.__mro__}"),
    ("{stem[0]}{ext}", "unknown field {stem[0]}"),
    ("{0}{ext}", "unknown field {0}"),  # positional fields
    ("{}{ext}", "unknown field {}"),
    ("{nope}{ext}", f"unknown field {{nope}}; {FIELDS}"),
    ("{stem!r}{ext}", "no conversions (!r) in fields"),
    ("{stem!s}{ext}", "no conversions (!s) in fields"),
    ("{stem:99999}{ext}", f"field width 99999 (at most {MAX_FIELD_WIDTH})"),
    ("{index:065d}{ext}", "field width 065 (at most 64)"),
    ("{stem:x<1000000000}{ext}", "field width 1000000000 (at most 64)"),
    ("{stem:{op}}{ext}", "nested fields are not allowed"),
    ("{stem", "expected '}' before end of string"),
    ("{index:s}{ext}", "Unknown format code 's' for object of type 'int'"),
    ("{stem}", "the name must end in an image suffix (use {ext}, e.g. {stem}_{op}{ext})"),
    ("{stem}.txt", "the name must end in an image suffix"),
    ("{stem}{ext}/", "it names no file"),
    ("", "it names no file"),
])
def test_bad_templates_are_refused_with_the_reason(template, problem):
    message = check_template(template)
    assert message is not None and message.startswith(f"bad template {template!r}")
    assert problem in message
    assert "\n" not in message


def test_a_bad_template_is_a_usage_error_for_name_before_expansion(cwd):
    with pytest.raises(UsageError) as info:
        make_plan(["does-not-exist/*.png"], op_label="max", template="{stem.__class__}{ext}")
    assert info.value.option == "--name"


def test_a_digit_fill_character_is_not_part_of_the_width():
    assert check_template("{index:9>8}{ext}") is None  # fill '9', align '>', width 8


# ----------------------------------------------------------------------------------------------
# Collisions: outputs, side files, run outputs, reads
# ----------------------------------------------------------------------------------------------


def selected(output):
    """A side file beside each output, like --indices-png."""
    stem, _ = os.path.splitext(output)
    return [stem + ".selected.png"]


def test_an_output_that_is_an_input_is_refused_however_spelled(cwd):
    touch("a.png")
    message = refused(items=["a.png"], op_label="max", output="a.png")
    assert message == ("a.png: output a.png would overwrite an input (a.png); "
                       "inputs are never overwritten")
    assert "would overwrite an input (a.png)" in refused(items=["a.png"], op_label="max",
                                                          output="./a.png")
    os.symlink("a.png", "link.png")
    assert "link.png would overwrite an input (a.png)" in refused(
        items=["a.png"], op_label="max", output="link.png")
    assert "a.png would overwrite an input" in refused(items=["a.png"], op_label="max",
                                                        template="{name}")


def test_two_inputs_writing_one_output(cwd):
    touch("x/a.png", "y/a.png")
    message = refused(items=["x/a.png", "y/a.png"], op_label="max", output="out")
    assert message.endswith(" would both write out/a_max.png") and ";" not in message
    # the same input twice is the same clash
    assert refused(items=["x/a.png", "x/a.png"], op_label="max") == \
        "x/a.png and x/a.png would both write x/a_max.png"


@pytest.mark.parametrize("inputs, kw, expected", [
    (["x/a.png", "y/a.png"], {"output": "out"},
     "y/a.png and x/a.png would both write out/a_max.png"),
    (["x/a.png", "y/a.selected.png"], {"output": "out", "template": "{stem}{ext}",
                                       "side_files": selected},
     "x/a.png and y/a.selected.png would both write out/a.selected.png"),
    (["a.png"], {"run_outputs": ["a_max.png"]}, "the run and a.png would both write a_max.png"),
], ids=["output-output", "side-output", "run-output"])
def test_a_clash_names_both_writers(cwd, inputs, kw, expected):
    touch(*inputs)
    assert refused(items=inputs, op_label="max", **kw) == expected


def test_at_most_five_problems_are_listed(cwd):
    touch("a.png")
    message = refused(items=["a.png"] * 7, op_label="max", output="out")
    assert message.count("would both write out/a_max.png") == 5
    assert message.endswith(" (and 1 more)")


def test_a_side_file_that_is_an_input(cwd):
    touch("a.png", "a_max.selected.png")
    message = refused(items=["a.png", "a_max.selected.png"], op_label="max",
                      side_files=selected)
    assert ("a.png: output a_max.selected.png would overwrite an input (a_max.selected.png)"
            in message)


def test_a_side_file_that_is_another_jobs_output(cwd):
    touch("x/a.png", "y/a.selected.png")
    message = refused(items=["x/a.png", "y/a.selected.png"], op_label="max", output="out",
                      template="{stem}{ext}", side_files=selected)
    assert "would both write out/a.selected.png" in message


def test_run_outputs_against_reads_and_outputs(cwd):
    touch("a.png", "s.json")
    # a run output (--save-stats) that the run reads (--stats)
    assert refused(items=["a.png"], op_label="batch", run_outputs=["s.json"],
                   reads=["s.json"]) == ("s.json would overwrite an input (s.json); "
                                         "inputs are never overwritten")
    # a run output that is an image input, and one that is a job's output
    assert "a.png would overwrite an input (a.png)" in refused(
        items=["a.png"], op_label="max", run_outputs=["a.png"])
    assert refused(items=["a.png"], op_label="max", run_outputs=["a_max.png"]).endswith(
        " would both write a_max.png")


def test_an_output_that_is_a_side_file_read(cwd):
    touch("a.png", "list.png")
    message = refused(items=["a.png"], op_label="max", template="list{ext}",
                      reads=["./list.png"])
    assert message == ("a.png: output list.png would overwrite an input (./list.png); "
                       "inputs are never overwritten")


def test_a_run_output_added_later_is_checked_too(cwd):
    touch("a.png")
    plan = make_plan(["a.png"], op_label="max")
    plan.add_run_output("sheet.png")
    assert plan.writes() == ["a_max.png", "sheet.png"]
    with pytest.raises(UsageError, match=r"a\.png would overwrite an input \(a\.png\)"):
        plan.add_run_output("a.png")


def test_writes_lists_main_outputs_then_side_files_then_run_outputs(cwd):
    touch("a.png", "b.png")
    plan = make_plan(["a.png", "b.png"], op_label="max", side_files=selected,
                     run_outputs=["s.json"])
    assert plan.writes() == ["a_max.png", "b_max.png", "a_max.selected.png",
                             "b_max.selected.png", "s.json"]
    assert [job.side for job in plan.jobs] == [("a_max.selected.png",), ("b_max.selected.png",)]


# ----------------------------------------------------------------------------------------------
# --shard
# ----------------------------------------------------------------------------------------------


def test_shard_takes_every_nth_job_and_keeps_names_and_total(cwd):
    touch(*(f"in/{c}.png" for c in "abcde"))
    full = make_plan(["in"], op_label="max", output="o", template="{index}-{stem}{ext}")
    one = make_plan(["in"], op_label="max", output="o", template="{index}-{stem}{ext}",
                    shard=(1, 2))
    two = make_plan(["in"], op_label="max", output="o", template="{index}-{stem}{ext}",
                    shard=(2, 2))
    assert [job.output for job in one.jobs] == ["o/0-a.png", "o/2-c.png", "o/4-e.png"]
    assert [job.output for job in two.jobs] == ["o/1-b.png", "o/3-d.png"]
    assert [job.index for job in two.jobs] == [1, 3]
    assert one.total == two.total == full.total == 5
    assert sorted(job.output for job in one.jobs + two.jobs) == \
        sorted(job.output for job in full.jobs)
    three = make_plan(["in"], op_label="max", shard=(5, 5))
    assert sources(three.jobs) == ["in/e.png"]


def test_shard_slices_after_the_collision_check(cwd):
    touch("x/a.png", "y/a.png", "b.png")
    # shard 2/3 is b.png alone, but the run as a whole has a clash: every shard refuses
    message = refused(items=["x/a.png", "y/a.png", "b.png"], op_label="max", output="out",
                      shard=(2, 3))
    assert message.endswith(" would both write out/a_max.png")


def test_a_shard_does_not_look_at_the_other_shards_outputs(cwd):
    """Shards run one after another (or on several machines) into one directory: outputs that
    an earlier shard wrote are not this shard's concern."""
    touch("in/a.png", "in/b.png", "out/a_max.png")  # shard 1/2 has run
    plan = make_plan(["in"], op_label="max", output="out", shard=(2, 2))
    assert [job.output for job in plan.jobs] == ["out/b_max.png"]
