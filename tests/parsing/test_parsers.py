"""Every supported format yields text with structure; bad files get a clear reason."""
import io

import pytest

from bastion.core.errors import ParseError
from bastion.parsing import parse
from conftest import EXAMPLES


def _parse(rel: str):
    path = EXAMPLES / rel
    return parse(path.read_bytes(), path.suffix.lstrip("."))


def test_pdf_keeps_pages():
    doc = _parse("finance/q3_2026_results_summary.pdf")
    assert [s.page for s in doc.sections] == [1, 2, 3]
    assert "EUR 48.2 million" in doc.text


def test_chinese_pdf_has_no_line_breaks_inside_words():
    doc = _parse("china/员工休假制度.pdf")
    assert "15 天" in doc.text or "15天" in doc.text
    assert "安\n排" not in doc.text


def test_docx_sections_follow_headings():
    doc = _parse("policies/code_of_conduct.docx")
    assert len(doc.sections) > 3 and all(s.heading for s in doc.sections)
    assert "EUR 50" in doc.text


def test_html_drops_navigation_and_footer():
    doc = _parse("policies/it_security_password_policy.html")
    assert "14 characters" in doc.text
    raw = (EXAMPLES / "policies/it_security_password_policy.html").read_text()
    import re

    nav = re.search(r"<nav.*?</nav>", raw, re.S).group(0)
    nav_words = set(re.sub(r"<[^>]+>", " ", nav).split()) - set(" ".join(s.text for s in doc.sections).split())
    assert nav_words, "navigation text should not all appear in the main text"


def test_markdown_headings_become_sections():
    doc = _parse("policies/travel_and_expenses_policy.md")
    assert doc.sections[0].heading and "EUR 180" in doc.text


def test_gbk_text_is_decoded():
    raw = (EXAMPLES / "china/通知.txt").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    doc = parse(raw, "txt")
    assert "国庆" in doc.text


def test_csv_rows_become_labelled_records():
    doc = _parse("finance/budget_2027.csv")
    first = doc.sections[0].text
    assert first.startswith("cost_center = CC-1000 | department = Executive Board | ") and doc.sections[0].heading == "row 1"


def test_xlsx_rows_become_labelled_records():
    doc = _parse("hr/salary_bands.xlsx")
    assert any("L5" in s.text for s in doc.sections)


def _encrypted_pdf() -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(EXAMPLES / "product/nw5000_spec_sheet.pdf"))
    writer.encrypt(user_password="s3cret", owner_password="owner")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


@pytest.mark.parametrize("content, media, reason", [
    (b"", "pdf", "empty"),
    (b"   \n", "md", "empty"),
    (b"%PDF-1.7 garbage", "pdf", "pdf"),
    (b"PK\x03\x04 not a docx", "docx", "docx"),
    (b"\x00\x01\x02\x03binary", "txt", "binary"),
    (b"only a header\n", "csv", "header row"),
    (b"<html><body><nav>menu</nav></body></html>", "html", "no extractable text"),
    (b"hello", "exe", "unsupported"),
])
def test_bad_input_raises_parse_error_with_reason(content, media, reason):
    with pytest.raises(ParseError) as err:
        parse(content, media)
    assert reason in str(err.value).lower()


def test_encrypted_pdf_is_reported():
    with pytest.raises(ParseError, match="encrypted"):
        parse(_encrypted_pdf(), "pdf")


def test_pypdf_warnings_do_not_reach_stderr():
    """pypdf logs "EOF marker not found" for a truncated PDF; the sync's own line says what is wrong, so
    the raw warning must not be printed beside it (a fresh interpreter: no logging set up, as in the CLI)."""
    import subprocess
    import sys

    code = ("from bastion.parsing import parse\n"
            "try:\n    parse(b'%PDF-1.4\\n1 0 obj\\n<< /Type /Catalog >>\\nendobj\\ngarbage', 'pdf')\n"
            "except Exception as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("corrupt PDF") and done.stderr == ""
