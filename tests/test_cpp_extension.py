"""The C++ extensions' build names (agents/cpp_extension.py)."""

from __future__ import annotations

from metabench.agents.cpp_extension import CppExtension


def test_build_name_follows_the_source(tmp_path):
    """Two versions of one source get two builds (two checkouts on one machine must not rebuild over each other's
    module); the same source keeps its name."""
    src = tmp_path / "kernel.cpp"
    src.write_text("int f() { return 1; }\n")
    ext = CppExtension("metabench_test", str(src))
    first = ext.build_name()
    assert first.startswith("metabench_test_") and first == CppExtension("metabench_test", str(src)).build_name()
    src.write_text("int f(int x) { return x; }\n")
    assert ext.build_name() != first


def test_build_name_follows_the_checkout(tmp_path):
    """The same source in two checkouts gets two builds: torch writes the source's path into its build file, so
    a shared folder would be rebuilt each time the other checkout loaded it last."""
    a, b = tmp_path / "a" / "kernel.cpp", tmp_path / "b" / "kernel.cpp"
    for src in (a, b):
        src.parent.mkdir()
        src.write_text("int f() { return 1; }\n")
    assert CppExtension("metabench_test", str(a)).build_name() != CppExtension("metabench_test", str(b)).build_name()
