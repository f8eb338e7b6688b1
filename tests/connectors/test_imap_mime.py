"""Which parts of a message are its text and which are attachments, from BODYSTRUCTUREs of the
shapes mail clients send (as imapclient parses them); the whole path runs against Dovecot in
test_imap.py."""
from __future__ import annotations

import pytest

from bastion.connectors._mime import Part, _params, decode, split_parts


def text(subtype: bytes, *, filename: bytes | None = None, encoding: bytes = b"7bit", size: int = 10):
    disposition = (b"attachment", (b"filename", filename)) if filename else None
    return (b"text", subtype, (b"charset", b"utf-8"), None, None, encoding, size, 1, None, disposition, None, None)


def basic(maintype: bytes, subtype: bytes, *, params=None, disposition=None, size: int = 100):
    return (maintype, subtype, params, None, None, b"base64", size, None, disposition, None, None)


def multi(subtype: bytes, *children):
    return ([*children], subtype, (b"boundary", b"x"), None, None, None)


def test_the_plain_alternative_is_the_text_and_files_are_attachments():
    structure = multi(b"mixed",
                      multi(b"alternative", text(b"plain"), multi(b"related", text(b"html"), basic(b"image", b"png"))),
                      basic(b"application", b"pdf", disposition=(b"attachment", (b"filename", b"q3.pdf"))),
                      text(b"csv", filename=b"rows.csv"))
    body, attachments = split_parts(structure)
    assert [(p.section, p.mime) for p in body] == [("1.1", "text/plain")]
    assert [(p.section, p.filename, p.media_type) for p in attachments] == [("2", "q3.pdf", "pdf"),
                                                                          ("3", "rows.csv", "csv")]


def test_html_is_the_text_when_there_is_no_plain_alternative():
    body, attachments = split_parts(multi(b"alternative", multi(b"related", text(b"html"), basic(b"image", b"gif"))))
    assert [(p.section, p.mime) for p in body] == [("1.1", "text/html")]
    assert attachments == []


def test_a_message_of_one_part_has_section_1():
    body, attachments = split_parts(text(b"plain"))
    assert [p.section for p in body] == ["1"] and attachments == []


def test_forwarded_messages_and_images_are_attachments_no_parser_reads():
    forwarded = (b"message", b"rfc822", None, None, None, b"7bit", 300, None, text(b"plain"), 5, None,
                 (b"attachment", None), None, None)
    _, attachments = split_parts(multi(b"mixed", text(b"plain"), forwarded,
                                       basic(b"image", b"jpeg", params=(b"name", b"photo.jpg"))))
    assert [(p.mime, p.media_type) for p in attachments] == [("message/rfc822", None), ("image/jpeg", None)]


@pytest.mark.parametrize(("raw", "name"), [
    ((b"filename*", b"utf-8''r%C3%A9sum%C3%A9%20%E5%B1%A5%E6%AD%B4%E6%9B%B8.txt"), "résumé 履歴書.txt"),
    ((b"filename*0*", b"utf-8''r%C3%A9", b"filename*1*", b"sum%C3%A9", b"filename*2", b".pdf"), "résumé.pdf"),
    ((b"filename", b"=?utf-8?b?5bGl5q20?= =?utf-8?q?=E6=9B=B8?=.pdf"), "履歴書.pdf"),
    ((b"filename*", b"x-unknown''abc.txt"), "abc.txt"),
])
def test_file_names_in_every_encoding_mail_clients_use(raw, name):
    assert _params(raw)["filename"] == name


def test_media_type_from_the_name_else_the_mime_type():
    part = Part("2", "application/octet-stream", "utf-8", "base64", 10, "Report.PDF", True)
    assert part.media_type == "pdf"
    assert Part("2", "application/pdf", "utf-8", "base64", 10, "scan", True).media_type == "pdf"
    assert Part("2", "application/zip", "utf-8", "base64", 10, "a.zip", True).media_type is None


def test_transfer_encodings_are_undone_and_broken_base64_is_an_error():
    assert decode(b"aGVs\r\nbG8=\r\n", "base64") == b"hello"
    assert decode(b"caf=C3=A9 =\r\nau lait", "quoted-printable") == "café au lait".encode()
    with pytest.raises(ValueError, match="invalid base64"):
        decode(b"!!! not base64 !!!", "base64")
