"""`livepatch corpus` through the installed console script, on a small real git history built here:
one commit per outcome, a merge (first parent only), a bare clone, the limits, and bad input."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from livepatch.patch import lpatch

LIVEPATCH = str(Path(sys.executable).parent / "livepatch")
_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}

# Bounds. What a bug here looks like is a run that computes forever or one that blocks forever; what a
# busy machine does is stretch wall time. A `livepatch corpus` run over this 8-commit history takes
# 0.3-1 s of CPU (children's rusage, session 9, load 7; a git command far less); its wall time is
# whatever share of the 2 shared CPUs a niced process gets: at load 30 (session 8) runs overran a 60 s
# wall bound while doing nothing wrong. So each child is bounded by CPU time, which load does not
# blur (RLIMIT_CPU: the kernel stops a runaway with SIGXCPU at 30 s, 30x the need), and by a wall
# bound that only a blocked process reaches (a deadlock uses no CPU): 300 s. pytest-timeout is the
# last resort for the test process itself, above the few child runs a test makes.
CPU_SECONDS = 30
WALL_SECONDS = 300
pytestmark = pytest.mark.timeout(1200)


def _cpu_bound() -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS + 5))


CART = (
    "class Cart:\n"
    "    def __init__(self):\n"
    "        self.items = []\n\n"
    "    def count(self):\n"
    "        return len(self.items)\n\n\n"
    "def total(items):\n"
    "    return sum(items)\n"
)
FIXED = CART.replace("sum(items)", "sum(items) + 0")
OWNED = FIXED.replace("self.items = []\n", "self.items = []\n        self.owner = None\n")
# (subject, {path: text}): each commit's changes, in order; the outcome each should get is in EXPECTED
HISTORY: list[tuple[str, dict[str, str]]] = [
    (
        "initial",
        {
            "shop/__init__.py": "",
            "shop/cart.py": CART,
            "shop/tests/__init__.py": "",
            "shop/tests/test_cart.py": "def test_total():\n    assert True\n",
            "tests/test_top.py": "def test_x():\n    pass\n",
            "README.md": "shop\n",
        },
    ),
    ("fix total", {"shop/cart.py": FIXED}),
    ("track the owner", {"shop/cart.py": OWNED}),
    ("explain total", {"shop/cart.py": "# totals are exact\n" + OWNED}),
    (
        "tests and docs only",
        {
            "shop/tests/test_cart.py": "def test_total():\n    assert 1\n",
            "tests/test_top.py": "def test_x():\n    assert 1\n",
            "README.md": "shop, the cart\n",
            "shop/py.typed": "",  # package data, not code
        },
    ),
    ("break it", {"shop/cart.py": "def total(items:\n    return 0\n"}),
]
EXPECTED = {
    "fix total": "accepted",
    "track the owner": "refused",
    "explain total": "empty",
    "tests and docs only": "skipped",
    "break it": "error",
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        check=True,
        env=_ENV,
        timeout=WALL_SECONDS,
        preexec_fn=_cpu_bound,
    ).stdout


def commit(repo: Path, subject: str, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", subject)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("history") / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    for subject, files in HISTORY:
        commit(root, subject, files)
    # a side branch merged with --no-ff: the first-parent walk sees the merge, not the side commits
    git(root, "checkout", "-q", "-b", "side", "HEAD~1")
    commit(
        root,
        "side: count twice",
        {"shop/cart.py": OWNED.replace("return len(self.items)", "return len(self.items) * 1")},
    )
    git(root, "checkout", "-q", "main")
    git(root, "revert", "--no-edit", "HEAD")  # "break it" undone: its old side does not compile
    git(root, "merge", "-q", "--no-ff", "-X", "theirs", "-m", "merge side", "side")
    return root


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LIVEPATCH, "corpus", *args],
        capture_output=True,
        text=True,
        timeout=WALL_SECONDS,
        preexec_fn=_cpu_bound,
        check=False,
    )


def run_json(*args: str) -> dict[str, Any]:
    proc = cli(*args, "--json")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def by_subject(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["subject"]: c for c in doc["commits"]}


@pytest.fixture(scope="module")
def whole(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """The whole history, with --json and --out: (the document printed, the --out directory)."""
    out = tmp_path_factory.mktemp("out")
    return run_json("--git", str(repo), "..main", "--package", "shop", "--out", str(out)), out


def test_every_outcome_on_a_real_history(whole: tuple[dict[str, Any], Path]) -> None:
    doc = whole[0]
    commits = by_subject(doc)
    assert [c["subject"] for c in doc["commits"]] == [
        "initial",
        "fix total",
        "track the owner",
        "explain total",
        "tests and docs only",
        "break it",
        'Revert "break it"',
        "merge side",
    ]  # oldest first, first parent only: "side: count twice" is part of the merge
    for subject, outcome in EXPECTED.items():
        assert commits[subject]["outcome"] == outcome, commits[subject]

    fix = commits["fix total"]
    assert fix["functions"] == [
        {"module": "shop.cart", "qualname": "total", "change": "changed", "definition": "function"}
    ]
    # only a function body changed: the category is inferred as thread-local, as `livepatch diff` does
    assert fix["bytes"] > 0 and fix["category"] == "thread-local" and fix["refusal_kinds"] == []

    owner = commits["track the owner"]
    assert owner["refusal_kinds"] == ["instance-attribute"]
    assert "self.owner" in owner["refusals"][0]["reason"]
    assert owner["functions"] == [] and owner["bytes"] == 0

    broken = commits["break it"]
    assert broken["error_kind"] == "does-not-compile"
    assert "new version of shop.cart" in broken["reason"]
    reverted = commits['Revert "break it"']
    assert reverted["outcome"] == "error" and "old version of shop.cart" in reverted["reason"]

    merge = commits["merge side"]
    assert merge["outcome"] == "accepted"
    assert [f["qualname"] for f in merge["functions"]] == ["Cart.count"]
    assert commits["initial"]["outcome"] == "skipped"
    assert doc["range_commits"] == [None, merge["sha"]]

    summary = doc["summary"]
    assert summary["commits_seen"] == 8
    assert summary["commits_changing_package"] == 6
    assert summary["outcomes"] == {
        "accepted": 2,
        "refused": 1,
        "empty": 1,
        "error": 2,
        "skipped": 2,
    }
    assert summary["accepted_pct"] == pytest.approx(100 * 2 / 6, abs=0.05)
    assert summary["refusals_by_kind"] == [
        {
            "kind": "instance-attribute",
            "commits": 1,
            "pct_of_changing": pytest.approx(100 / 6, abs=0.05),
            "sole": 1,
            "example": owner["sha"],
            "example_reason": owner["refusals"][0]["reason"],
        }
    ]
    assert [e["kind"] for e in summary["errors_by_kind"]] == ["does-not-compile"]


def test_bare_repository_and_untouched_checkout(
    repo: Path, tmp_path: Path, whole: tuple[dict[str, Any], Path]
) -> None:
    bare = tmp_path / "bare.git"
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(repo), str(bare)],
        check=True,
        env=_ENV,
        timeout=WALL_SECONDS,
        preexec_fn=_cpu_bound,
    )
    head = git(repo, "rev-parse", "HEAD")
    from_bare = run_json("--git", str(bare), "..main", "--package", "shop")
    from_clone = whole[0]
    assert [c["outcome"] for c in from_bare["commits"]] == [
        c["outcome"] for c in from_clone["commits"]
    ]
    assert git(repo, "status", "--porcelain") == "" and git(repo, "rev-parse", "HEAD") == head


def test_range_limit_and_out_dir(repo: Path, whole: tuple[dict[str, Any], Path]) -> None:
    # OLD..NEW leaves OLD out
    doc = run_json("--git", str(repo), "main~6..main~4", "--package", "shop")
    assert [c["subject"] for c in doc["commits"]] == ["track the owner", "explain total"]
    # --limit keeps the most recent commits changing the package (and the skipped ones between)
    doc = run_json("--git", str(repo), "..main", "--package", "shop", "--limit", "2")
    changing = [c["subject"] for c in doc["commits"] if c["outcome"] != "skipped"]
    assert changing == ['Revert "break it"', "merge side"]
    printed, out = whole
    written = json.loads((out / "corpus.json").read_text())
    assert written == printed
    accepted = [c["sha"] for c in written["commits"] if c["outcome"] == "accepted"]
    assert sorted(p.name for p in (out / "patches").iterdir()) == sorted(
        f"{sha[:12]}.lpatch" for sha in accepted
    )
    for sha in accepted:
        patch = lpatch.read(out / "patches" / f"{sha[:12]}.lpatch")
        size = (out / "patches" / f"{sha[:12]}.lpatch").stat().st_size
        assert patch.signature is None and not patch.spec.refusals
        assert size == next(c["bytes"] for c in written["commits"] if c["sha"] == sha)


def test_a_commit_over_max_lines_is_reported_as_too_large(repo: Path) -> None:
    proc = cli("--git", str(repo), "main~7..main~6", "--package", "shop", "--max-lines", "1")
    assert proc.returncode == 0, proc.stderr  # the table: outcomes, error kinds, an example each
    assert "error: too-large" in proc.stdout and "over --max-lines 1" in proc.stdout
    assert "accepted: 0% of the commits changing the package" in proc.stdout


def test_moving_the_package_to_src_is_empty_and_paths_pins_the_layout(tmp_path: Path) -> None:
    root = tmp_path / "src-repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    commit(root, "initial", {"shop/__init__.py": "", "shop/cart.py": CART})
    (root / "src").mkdir()
    git(root, "mv", "shop", "src/shop")
    git(root, "commit", "-q", "-m", "move to src")
    commit(root, "fix", {"src/shop/cart.py": FIXED})
    # a move is a rename: 0 lines changed (not too-large), the same code (empty)
    doc = run_json("--git", str(root), "..main", "--package", "shop", "--max-lines", "2")
    assert [c["outcome"] for c in doc["commits"]] == ["skipped", "empty", "accepted"]
    doc = run_json("--git", str(root), "..main", "--package", "shop", "--paths", "src")
    assert [c["outcome"] for c in doc["commits"]] == ["skipped", "skipped", "accepted"]
    assert doc["commits"][1]["reason"] == "creates the package (absent at the parent)"
    proc = cli("--git", str(root), "..main", "--package", "shop", "--paths", "lib")
    assert proc.returncode == 1 and "no package shop" in proc.stderr and "--paths" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}", "..HEAD", "--package", "shop"], "is not a git repository"),
        (["{tmp}/missing", "..HEAD", "--package", "shop"], "is not a directory"),
        (["{repo}", "nope..main", "--package", "shop"], "'nope' is not a commit"),
        (["{repo}", "main", "--package", "shop"], "is not a range"),
        (["{repo}", "main...main", "--package", "shop"], "is not a range"),
        (["{repo}", "--all..main", "--package", "shop"], "is not a revision"),
        (["{repo}", "..main", "--package", "store"], "no package store at main"),
        (["{repo}", "..main", "--package", "not a name"], "is not a package name"),
    ],
)
def test_bad_input_is_a_clear_error_with_exit_1(
    repo: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    argv = [a.format(tmp=tmp_path, repo=repo) for a in args]
    proc = cli("--git", *argv)
    assert proc.returncode == 1, proc.stdout
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_bad_input_with_json_is_a_json_error_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = cli("--git", str(tmp_path), "..HEAD", "--package", "shop", "--json", "--out", str(out))
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False and "is not a git repository" in doc["error"]
    assert not out.exists()
