"""The record layouts cannot drift: the compiled BPF object's BTF must agree
with the offsets and sizes the Python decoder uses."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from ktriage.sensor import build, layouts


def _btf_structs(obj: str) -> dict[str, dict]:
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    out = subprocess.run([bpftool, "-j", "btf", "dump", "file", obj], capture_output=True, text=True, check=True)
    return {t["name"]: t for t in json.loads(out.stdout)["types"] if t.get("kind") == "STRUCT" and t.get("name")}


@pytest.fixture(scope="module")
def btf(root: None) -> dict[str, dict]:
    return _btf_structs(str(build.build("ktriage")))


@pytest.mark.parametrize("layout", layouts.LAYOUTS, ids=lambda layout: layout.name)
def test_record_layout_matches_compiled_btf(btf: dict[str, dict], layout: layouts.Layout) -> None:
    struct = btf[layout.c_name]
    assert struct["size"] == layout.size
    offsets = {m["name"]: m["bits_offset"] // 8 for m in struct["members"]}
    assert offsets == layout.offsets()


def test_config_and_stats_match_compiled_btf(btf: dict[str, dict]) -> None:
    assert btf["kt_config"]["size"] == layouts.CONFIG_STRUCT.size
    assert [m["name"] for m in btf["kt_config"]["members"]] == [f.name for f in layouts.CONFIG]
    assert btf["kt_stats"]["size"] == layouts.STATS_STRUCT.size


def test_layouts_refuse_misaligned_fields() -> None:
    with pytest.raises(ValueError, match="not 8-aligned"):
        layouts.Layout(99, "bad", "file", (layouts.Field("a", "u32"), layouts.Field("b", "u64")))


def test_kinds_and_names_unique() -> None:
    assert len({layout.kind for layout in layouts.LAYOUTS}) == len(layouts.LAYOUTS)
    assert all(layout.family in layouts.KERNEL_FAMILIES for layout in layouts.LAYOUTS)
