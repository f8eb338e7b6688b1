"""The optional LLM judge, through a real HTTP server speaking the OpenAI streaming protocol."""
from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bastion.evaluation.items import EvalItem
from bastion.evaluation.judge import Judge


class _Grader(BaseHTTPRequestHandler):
    """Grades 1 when the candidate holds a reference answer, else 0; "broken" for a bad verdict."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        refs = re.search(r"Reference answers: (.*)\n", prompt).group(1).split(" | ")
        cand = re.search(r"Candidate answer: (.*)\n", prompt).group(1)
        verdict = "maybe" if "broken" in cand else ("1" if any(r in cand for r in refs) else "0")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        chunk = {"choices": [{"delta": {"content": verdict}, "finish_reason": "stop"}]}
        self.wfile.write(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Grader)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_judge_verdicts_and_a_run_reports_them(judge_url, make_ws, tmp_path):
    judge = Judge(judge_url, "grader")
    item = EvalItem(question="How many days of leave?", answers=["25 days"])
    assert judge.verdict(item, "Staff get 25 days a year.") == 1.0
    assert judge.verdict(item, "Staff get 20 days a year.") == 0.0
    assert judge.verdict(item, "broken") is None  # an answer that is not a grade is no verdict
    dead = Judge("http://127.0.0.1:9/v1", "grader")
    assert dead.verdict(item, "25 days") is None  # an unreachable judge never fails the run

    (tmp_path / "docs" / "leave.md").write_text("Full-time staff receive 25 days of paid leave.\n", encoding="utf-8")
    ws = make_ws()
    ws.sync()
    ws.config.answer.min_evidence = ws.config.answer.min_evidence_zh = -1.0
    ws.evaluation.import_items("j", [item], acl="everyone", asker="bob")
    run = ws.evaluation.run("j", mode="extract", judge=judge, repeat=0)
    assert run["configs"][0]["metrics"]["judge"] == 1.0
    judge.close()
