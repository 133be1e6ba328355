#!/usr/bin/env python3
"""Makes the document fixtures for KeelDocuments' tests with real tools.

Every fixture comes out of a program somebody else wrote (pandoc, python-docx,
fpdf2, Python's zipfile), so the tests read what those tools really produce,
not bytes we typed to fit our parser.

    python3 -m venv .venv && .venv/bin/pip install -r Tests/Fixtures/documents/requirements.txt
    apt-get install -y pandoc poppler-utils
    .venv/bin/python scripts/make-document-fixtures.py            # Tests/Fixtures/documents/
    .venv/bin/python scripts/make-document-fixtures.py --bench DIR  # big-300.pdf, big-50mb.docx (not committed)
    python3 scripts/make-document-fixtures.py --crafted             # only the crafted fixtures (standard library)

Crafted fixtures are the exception to "real tools only": they are attacks,
made by rewriting a real fixture's bytes with zipfile and struct.

- zip64-offset.docx: report.docx whose word/document.xml central-directory
  header says its local header is at 0xFFFFFFFF and gives, in a ZIP64 extra
  field (0x0001), the offset 0x8000000000000000; ZIPFoundation 0.9.20 traps
  converting that to off_t, so the reader must refuse it first.
- styles-chain.docx: report.docx with 20,000 more paragraph styles in
  word/styles.xml, each based on the one before (the first on Heading2):
  resolving levels by following basedOn from every style is quadratic.
"""

import argparse
import io
import os
import subprocess
import sys
import tempfile
import zipfile

import struct

try:  # not needed for --crafted
    import docx
    from fpdf import FPDF
except ImportError:
    docx = FPDF = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "Fixtures", "documents")

TITLE = "Quarterly Operations Report"
INTRO = ("This report reviews how the Keel platform operated during the third quarter. "
         "It compares the numbers with the previous review and says what should change next.")

# (level, title, paragraphs). Level 2 sections, level 3 subsections; the
# title is level 1. Each body has a distinctive sentence the tests search for.
SECTIONS = [
    (2, "Executive Summary", [
        "Throughput rose by eighteen percent while the incident count fell to its lowest level this year. "
        "The on-call rotation answered every page within the agreed response window. "
        "No customer-visible outage lasted longer than four minutes.",
    ]),
    (2, "Methodology", [
        "We sampled request logs from all three regions at one-minute resolution. "
        "Each measurement was cross-checked against the billing ledger and the synthetic probes.",
        "Outliers beyond five standard deviations were reviewed by hand before inclusion. "
        "Nothing was discarded without a written reason.",
    ]),
    (2, "Findings", [
        "The findings below are grouped by the two concerns that customers raised most often. "
        "Both were measured the same way in every region.",
    ]),
    (3, "Latency", [
        "Median latency dropped from 142 to 97 milliseconds after the connection pool was resized. "
        "The slowest percentile still suffers from cold caches in the Frankfurt region.",
    ]),
    (3, "Cost", [
        "Storage spending grew faster than traffic because snapshots were retained indefinitely. "
        "Moving archives to colder tiers would save roughly a quarter of the monthly invoice.",
    ]),
    (2, "Recommendations", [
        "Shorten the snapshot retention to ninety days and prewarm caches before regional failovers. "
        "Publish the latency dashboard to every team so that regressions are noticed within a day.",
    ]),
    (2, "Conclusion", [
        "Operations are healthier than a quarter ago, and the remaining problems are understood. "
        "The next review will check whether the recommendations were carried out.",
    ]),
]

# pandoc 2.x's plain writer drops every heading marker; this filter numbers the
# headings ("1.", "1.1", "1.3.1") so the plain text keeps its outline the way
# hand-written text files often do.
NUMBER_HEADINGS_LUA = """
local counters = {0, 0, 0, 0, 0, 0}
function Header(h)
  counters[h.level] = counters[h.level] + 1
  for i = h.level + 1, 6 do counters[i] = 0 end
  local parts = {}
  for i = 1, h.level do parts[#parts + 1] = tostring(counters[i]) end
  local number = table.concat(parts, ".")
  if h.level == 1 then number = number .. "." end
  table.insert(h.content, 1, pandoc.Space())
  table.insert(h.content, 1, pandoc.Str(number))
  return h
end
"""


def markdown():
    lines = ["# " + TITLE, "", INTRO, ""]
    for level, title, paragraphs in SECTIONS:
        lines += ["#" * level + " " + title, ""]
        for p in paragraphs:
            lines += [p, ""]
    return "\n".join(lines)


def run_pandoc(md_path, args):
    return subprocess.run(["pandoc", md_path, "-f", "markdown"] + args, check=True, capture_output=True).stdout


def write(name, data):
    mode = "w" if isinstance(data, str) else "wb"
    with open(os.path.join(OUT, name), mode) as f:
        f.write(data)


def make_docx(path):
    d = docx.Document()
    d.core_properties.title = TITLE
    d.add_heading(TITLE, 0)  # the Title style
    d.add_paragraph(INTRO)
    for level, title, paragraphs in SECTIONS:
        d.add_heading(title, level)  # Heading 2 / Heading 3
        for p in paragraphs:
            d.add_paragraph(p)
    d.save(path)


SIZES = {1: 24, 2: 18, 3: 14}
BODY_SIZE = 11


def make_pdf(path, outline):
    pdf = FPDF()
    pdf.set_title(TITLE)
    pdf.add_page()

    def heading(level, text):
        if outline:
            pdf.start_section(text, level=level - 1)
        pdf.set_font("Helvetica", "B", SIZES[level])
        pdf.multi_cell(0, SIZES[level] * 0.5, text, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(2)

    def body(text):
        pdf.set_font("Helvetica", "", BODY_SIZE)
        pdf.multi_cell(0, 6, text, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)

    heading(1, TITLE)
    body(INTRO)
    for level, title, paragraphs in SECTIONS:
        if title in ("Findings", "Conclusion"):
            pdf.add_page()
        heading(level, title)
        for i, p in enumerate(paragraphs):
            if title == "Methodology" and i == 1:
                pdf.add_page()  # so one section spans two pages
            body(p)
    pdf.output(path)


def make_scanned_pdf(path):
    pdf = FPDF()
    pdf.add_page()
    pdf.set_fill_color(90, 90, 90)
    for row in range(12):
        pdf.rect(20, 20 + row * 14, 170 - (row % 3) * 30, 6, style="F")
    pdf.ellipse(80, 220, 50, 30, style="D")
    pdf.output(path)


def make_bomb_docx(path):
    """A python-docx document whose word/document.xml inflates to ~600 MB of
    spaces (XML whitespace between elements), compressing to well under 1 MB."""
    buffer = io.BytesIO()
    d = docx.Document()
    d.add_paragraph("This archive expands far beyond any sane limit.")
    d.save(buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename != "word/document.xml":
                out.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
                continue
            cut = data.index(b"<w:body>") + len(b"<w:body>")
            padded = zipfile.ZipInfo("word/document.xml", info.date_time)
            padded.compress_type = zipfile.ZIP_DEFLATED
            with out.open(padded, "w", force_zip64=True) as entry:
                entry.write(data[:cut])
                chunk = b" " * (1 << 20)
                for _ in range(600):
                    entry.write(chunk)
                entry.write(data[cut:])


def make_malformed_docx(path):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>')
        out.writestr("word/styles.xml", '<?xml version="1.0"?><w:styles xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"/>')


WORDS = ("capacity ledger region probe cache latency invoice snapshot tier failover rotation incident "
         "throughput dashboard regression budget quota replica shard window queue backlog retention").split()


def filler(seed, sentences):
    out = []
    for s in range(sentences):
        words = [WORDS[(seed * 7 + s * 13 + i * 5) % len(WORDS)] for i in range(14)]
        out.append(" ".join(words).capitalize() + ".")
    return " ".join(out)


def make_big_pdf(path, pages=300):
    pdf = FPDF()
    pdf.set_title("Operations Handbook")
    pdf.add_page()
    chapter = 0
    while pdf.page_no() < pages or pdf.get_y() < 200:
        chapter += 1
        pdf.start_section(f"Chapter {chapter}", level=0)
        pdf.set_font("Helvetica", "B", 18)
        pdf.cell(0, 10, f"Chapter {chapter}", new_x="LMARGIN", new_y="NEXT")
        for sub in range(1, 4):
            pdf.start_section(f"Part {chapter}.{sub}", level=1)
            pdf.set_font("Helvetica", "B", 14)
            pdf.cell(0, 8, f"Part {chapter}.{sub}", new_x="LMARGIN", new_y="NEXT")
            pdf.set_font("Helvetica", "", 11)
            for p in range(5):
                pdf.multi_cell(0, 5, filler(chapter * 31 + sub * 7 + p, 6), new_x="LMARGIN", new_y="NEXT")
                pdf.ln(2)
        if pdf.page_no() >= pages:
            break
    pdf.output(path)


def make_big_docx(path, target=47 * 1024 * 1024, paragraphs=6000):
    """~50 MB (under the 50 MiB default limit) like real large Word files: text (about 12 million characters,
    under the default character limit) plus pictures, since 50 MB of
    compressed text alone would be hundreds of millions of characters. The
    pictures are PNGs of seeded noise (made with Pillow, which fpdf2 pulls
    in), so they don't compress."""
    import random
    from PIL import Image
    rng = random.Random(42)
    d = docx.Document()
    d.core_properties.title = "Operations Handbook"
    d.add_heading("Operations Handbook", 0)
    for n in range(1, paragraphs + 1):
        if n % 40 == 1:
            d.add_heading(f"Chapter {n // 40 + 1}", 1)
        d.add_paragraph(filler(n, 20))
    buffer = io.BytesIO()
    d.save(buffer)
    while buffer.tell() < target:
        side = 1024
        noise = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
        picture = io.BytesIO()
        noise.save(picture, format="PNG", compress_level=1)
        picture.seek(0)
        d.add_picture(picture)
        buffer = io.BytesIO()
        d.save(buffer)
    with open(path, "wb") as f:
        f.write(buffer.getvalue())


def make_zip64_offset_docx(path, source):
    """See the module docstring: a central-directory entry with a ZIP64 local-header offset of 2^63."""
    with zipfile.ZipFile(source) as original, io.BytesIO() as buffer:
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as out:
            for info in original.infolist():
                out.writestr(info.filename, original.read(info.filename))
        data = bytearray(buffer.getvalue())
    eocd = data.rindex(b"PK\x05\x06")
    count, size, start = struct.unpack_from("<HII", data, eocd + 10)
    headers = []
    at = start
    for _ in range(count):
        fixed = bytearray(data[at:at + 46])
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", fixed, 28)
        name = bytes(data[at + 46:at + 46 + name_length])
        extra = bytes(data[at + 46 + name_length:at + 46 + name_length + extra_length])
        comment = bytes(data[at + 46 + name_length + extra_length:at + 46 + name_length + extra_length + comment_length])
        if name == b"word/document.xml":
            extra = struct.pack("<HHQ", 0x0001, 8, 0x8000000000000000)
            struct.pack_into("<H", fixed, 6, 45)            # version needed: ZIP64
            struct.pack_into("<H", fixed, 30, len(extra))
            struct.pack_into("<I", fixed, 42, 0xFFFFFFFF)   # the offset is in the ZIP64 field
        headers.append(bytes(fixed) + name + extra + comment)
        at += 46 + name_length + extra_length + comment_length
    directory = b"".join(headers)
    end = bytearray(data[eocd:eocd + 22])
    struct.pack_into("<I", end, 12, len(directory))
    with open(path, "wb") as f:
        f.write(bytes(data[:start]) + directory + bytes(end))


def make_styles_chain_docx(path, source, length=20000):
    """See the module docstring: a 20,000-step w:basedOn chain."""
    chain = "".join(
        f'<w:style w:type="paragraph" w:styleId="C{i}"><w:name w:val="Chain {i}"/>'
        f'<w:basedOn w:val="{"C%d" % (i - 1) if i else "Heading2"}"/></w:style>'
        for i in range(length))
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for info in original.infolist():
            data = original.read(info.filename)
            if info.filename == "word/styles.xml":
                data = data.replace(b"</w:styles>", chain.encode() + b"</w:styles>")
            out.writestr(info.filename, data)


def make_crafted():
    report = os.path.join(OUT, "report.docx")
    make_zip64_offset_docx(os.path.join(OUT, "zip64-offset.docx"), report)
    make_styles_chain_docx(os.path.join(OUT, "styles-chain.docx"), report)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bench", metavar="DIR", help="write the big benchmark files into DIR instead")
    parser.add_argument("--crafted", action="store_true", help="only (re)make the crafted fixtures, from report.docx")
    args = parser.parse_args()
    if args.crafted:
        make_crafted()
        return
    if args.bench:
        os.makedirs(args.bench, exist_ok=True)
        make_big_pdf(os.path.join(args.bench, "big-300.pdf"))
        make_big_docx(os.path.join(args.bench, "big-50mb.docx"))
        for name in ("big-300.pdf", "big-50mb.docx"):
            print(name, os.path.getsize(os.path.join(args.bench, name)), "bytes")
        return

    os.makedirs(OUT, exist_ok=True)
    md = markdown()
    write("report.md", md)
    md_path = os.path.join(OUT, "report.md")
    write("report.html", run_pandoc(md_path, ["-t", "html5", "-s", "--metadata", "pagetitle=" + TITLE]))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(NUMBER_HEADINGS_LUA)
    try:
        write("report.txt", run_pandoc(md_path, ["-t", "plain", "--lua-filter", lua.name]))
    finally:
        os.unlink(lua.name)
    make_docx(os.path.join(OUT, "report.docx"))
    make_pdf(os.path.join(OUT, "report.pdf"), outline=True)
    make_pdf(os.path.join(OUT, "report-no-outline.pdf"), outline=False)
    make_scanned_pdf(os.path.join(OUT, "scanned.pdf"))
    make_bomb_docx(os.path.join(OUT, "bomb.docx"))
    make_malformed_docx(os.path.join(OUT, "malformed.docx"))
    with open(os.path.join(OUT, "report.pdf"), "rb") as f:
        data = f.read()
    write("truncated.pdf", data[: len(data) // 2])
    make_crafted()
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"fixtures in {OUT}: {total} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
