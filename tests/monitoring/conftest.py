"""A source of ten small documents (English and Chinese) and helpers to break it in known ways."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bastion.testing import HashEmbedder
from bastion.workspace import Workspace

TOPICS = [
    ("travel.md", "# Travel\nThe hotel cap is 180 euro per night on business trips. Book trains for trips under four hours."),
    ("leave.md", "# Leave\nAnnual leave is 28 working days. Carry over at most five days into the next year."),
    ("payroll.md", "# Payroll\nSalaries are paid on the 25th of each month. Payslips are in the HR portal."),
    ("security.md", "# Security\nLock your screen when you leave your desk. Report phishing to the security desk."),
    ("expenses.md", "# Expenses\nSubmit receipts within thirty days. Meals are reimbursed up to 40 euro a day."),
    ("remote.md", "# Remote work\nStaff may work from home two days a week with their manager's approval."),
    ("差旅.md", "# 差旅政策\n出差住宿每晚上限为八百元人民币。四小时以内的行程请乘坐火车。"),
    ("年假.md", "# 年假制度\n员工每年享有十五天带薪年假，未休年假最多可结转五天。"),
    ("报销.md", "# 报销流程\n报销申请须在出差结束后三十天内提交，并附上发票原件。"),
    ("保密.md", "# 保密规定\n请勿将客户数据发送到外部邮箱，离开座位时请锁定屏幕。"),
]


def mojibake(text: str) -> str:
    """What a UTF-8 export read back as Windows-1252 looks like (a classic broken feed)."""
    return text.encode("utf-8").decode("cp1252", errors="replace")


def broken(text: str) -> str:
    """Garbled text of any script: mojibake where there is non-ASCII text, else lost bytes (U+FFFD)."""
    if not text.isascii():
        return mojibake(text)
    return "".join("\ufffd" if i % 7 == 3 else c for i, c in enumerate(text))


class Source:
    def __init__(self, root: Path):
        self.root = root

    def write(self, name: str, text: str | bytes, age_s: float = 0) -> Path:
        p = self.root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        t = time.time() - age_s
        os.utime(p, (t, t))
        return p

    def healthy(self, age_s: float = 0) -> None:
        for name, text in TOPICS:
            self.write(name, text, age_s)

    def remove(self, names) -> None:
        for n in names:
            (self.root / n).unlink()


@pytest.fixture
def src(tmp_path) -> Source:
    s = Source(tmp_path / "docs")
    s.healthy()
    return s


@pytest.fixture
def open_ws(tmp_path):
    """``open_ws(toml_extra="", embedder=None)``: the workspace (created once), users alice/bob, source docs."""
    home = tmp_path / "ws"
    opened: list[Workspace] = []

    def factory(toml_extra: str = "", embedder=None) -> Workspace:
        if not home.exists():
            Workspace.init(home)
        if toml_extra:
            with open(home / "bastion.toml", "a", encoding="utf-8") as fh:
                fh.write("\n" + toml_extra + "\n")
        ws = Workspace.open(home, embedder=embedder or HashEmbedder())
        if not opened:
            ws.directory.add_user("alice", groups=["staff"])
            ws.directory.add_user("bob", groups=["staff"])
            ws.sources.add_folder("docs", tmp_path / "docs", acl="group:staff")
        opened.append(ws)
        return ws

    yield factory
    for ws in opened:
        ws.close()


def sync(ws, **kw):
    [report] = ws.sync("docs", **kw)
    return report


def open_checks(ws) -> set[str]:
    return {a["check"] for a in ws.monitor.alerts(source="docs")}
