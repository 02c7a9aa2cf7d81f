"""The documents source: a folder of real PDF, DOCX, HTML, Markdown and text files (made here with
fpdf2, pypdf and python-docx) becomes the corpus; bad files are skipped and named; re-runs convert
only what changed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import DataPaths, SourceConfig
from t0_pipeline.corpus import documents
from t0_pipeline.corpus.crawl import run_crawl

VPN = "Connect to the office network from home with the VPN client installed on every laptop."
PRINTER = (
    "To add a printer, open Settings, choose Devices, then Add printer and pick it from the list."
)


def make_pdf(path: Path, lines: list[str], title: str | None = None) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    if title:
        pdf.set_title(title)
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    for line in lines:
        pdf.multi_cell(0, 8, line, new_x="LMARGIN", new_y="NEXT")
    if not lines:  # a scanned page stands in: drawing, no text
        pdf.rect(20, 20, 100, 60, style="F")
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))


def encrypt(src: Path, dest: Path) -> None:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(str(src)))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="RC4-128")
    with open(dest, "wb") as fh:
        writer.write(fh)


def make_docx(path: Path, title: str | None, heading: str, paragraphs: list[str]) -> None:
    import docx

    document = docx.Document()
    if title:
        document.core_properties.title = title
    document.add_heading(heading, level=1)
    for text in paragraphs:
        document.add_paragraph(text)
    document.save(str(path))


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "docs"
    make_pdf(root / "network" / "VPN Guide.pdf", ["Working from home", VPN], title="Remote access")
    make_pdf(
        root / "untitled notes.pdf", ["Backups run every night at two; restore from the portal."]
    )
    make_docx(root / "Printers.docx", None, "Adding a printer", [PRINTER])
    make_docx(
        root / "leave.docx",
        "Annual leave policy",
        "Leave",
        ["Book annual leave in the HR portal before the end of March."],
    )
    (root / "reset.html").write_text(
        "<html><head><title>Password reset</title></head><body><nav>Home | Help | Login</nav>"
        "<main><h1>Reset your password</h1><p>Open the self-service portal and answer your "
        "security questions.</p></main><footer>Copyright the IT desk</footer></body></html>",
        encoding="utf-8",
    )
    (root / "wifi.md").write_text(
        "Intro line\n\n## Guest Wi-Fi\n\nJoin the guest network and accept the terms.\n",
        encoding="utf-8",
    )
    (root / "phones.txt").write_text(
        "Desk phones: dial 9 for an outside line, or 0 for reception.\n", encoding="utf-8"
    )
    # the bad ones
    make_pdf(root / "scan.pdf", [])
    encrypt(root / "untitled notes.pdf", root / "locked.pdf")
    (root / "corrupt.pdf").write_bytes(b"%PDF-1.4\n1 0 obj garbage without end")
    (root / "blank.docx").write_bytes(b"")
    (root / "archive.zip").write_bytes(b"PK\x03\x04")
    (root / ".hidden.md").write_text("# never read\n", encoding="utf-8")
    return root


def crawl(root: Path, data: Path, **extra):
    source = SourceConfig(kind="documents", location=str(root), exclude_slugs=[], **extra)
    return run_crawl(source, DataPaths(data))


def test_every_kind_is_read_with_its_title_and_every_bad_file_is_named(folder, tmp_path):
    df, report = crawl(folder, tmp_path / "data")
    pages = {r["slug"]: r for r in df.iter_rows(named=True)}
    assert sorted(pages) == [
        "leave",
        "network-vpn-guide",
        "phones",
        "printers",
        "reset",
        "untitled-notes",
        "wifi",
    ]
    assert VPN in pages["network-vpn-guide"]["body"].replace("\n", " ")
    assert pages["network-vpn-guide"]["title"] == "Remote access"  # the PDF's own title
    assert pages["untitled-notes"]["title"] == "untitled notes"  # none: the file name
    assert pages["leave"]["title"] == "Annual leave policy"  # DOCX core properties
    assert pages["printers"]["title"] == "Adding a printer"  # else its first heading
    assert PRINTER in pages["printers"]["body"]
    assert pages["reset"]["title"] == "Password reset"
    assert "self-service portal" in pages["reset"]["body"]
    assert "Login" not in pages["reset"]["body"] and "Copyright" not in pages["reset"]["body"]
    assert pages["wifi"]["title"] == "Guest Wi-Fi"
    assert pages["network-vpn-guide"]["url"] == "network/VPN Guide.pdf"
    reasons = {f["url"]: f["error"] for f in report.failed}
    assert reasons.keys() == {"scan.pdf", "locked.pdf", "corrupt.pdf", "blank.docx", "archive.zip"}
    assert reasons["scan.pdf"].startswith("no text layer: needs OCR")
    assert reasons["locked.pdf"].startswith("encrypted")
    assert "not a readable PDF" in reasons["corrupt.pdf"]
    assert reasons["blank.docx"] == "empty file (0 bytes)"
    assert "unknown kind of file '.zip'" in reasons["archive.zip"]
    assert len(report.new) == 7 and not report.changed


def test_a_rerun_converts_only_the_changed_file_and_keeps_text_of_one_that_now_fails(
    folder, tmp_path, monkeypatch
):
    data = tmp_path / "data"
    first, _ = crawl(folder, data)
    converted: list[str] = []
    real = documents.convert
    monkeypatch.setattr(
        documents, "convert", lambda path, raw: converted.append(path.name) or real(path, raw)
    )
    (folder / "phones.txt").write_text("Desk phones: dial 8 now for an outside line.\n")
    (folder / "leave.docx").write_bytes(b"not a zip any more")  # now fails
    (folder / "wifi.md").unlink()
    df, report = crawl(folder, data)
    # the five bad files are tried again (they have no previous text); the good ones are not
    bad = {"scan.pdf", "locked.pdf", "corrupt.pdf", "blank.docx", "archive.zip"}
    assert [n for n in converted if n not in bad] == [
        "leave.docx",
        "phones.txt",
    ]
    assert report.changed == ["phones"] and report.removed == ["wifi"]
    assert "leave" in {f["slug"] for f in report.failed}
    pages = {r["slug"]: r for r in df.iter_rows(named=True)}
    old = {r["slug"]: r for r in first.iter_rows(named=True)}
    assert pages["leave"]["body"] == old["leave"]["body"]  # the previous text is kept
    assert "dial 8" in pages["phones"]["body"]


def test_a_folder_with_nothing_readable_is_one_error_and_the_corpus_is_kept(folder, tmp_path):
    data = tmp_path / "data"
    crawl(folder, data)
    before = DataPaths(data).pages.read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.docx").write_bytes(b"")
    (bad / "b.pdf").write_bytes(b"junk")
    with pytest.raises(T0Error, match=r"no readable document in .*a\.docx: empty file"):
        crawl(bad, data)
    assert DataPaths(data).pages.read_bytes() == before
    with pytest.raises(T0Error, match="does not exist"):
        crawl(tmp_path / "nowhere", data)


def test_globs_and_the_size_limit_select_files(folder, tmp_path):
    df, report = crawl(folder, tmp_path / "d1", include=["network/*", "*.md"], exclude=["*.pdf"])
    assert df["slug"].to_list() == ["wifi"] and not report.failed
    df, report = crawl(folder, tmp_path / "d2", include=["*.txt", "*.docx"], max_file_mb=0.01)
    reasons = {f["url"]: f["error"] for f in report.failed}
    assert "over the size limit" in reasons["Printers.docx"]  # a DOCX is ~36 KB
    assert df["slug"].to_list() == ["phones"]


def test_slugs_follow_the_rule():
    assert documents.slug_for(Path("network/VPN Guide.pdf")) == "network-vpn-guide"
    assert documents.slug_for(Path("HR/Leave & Sickness (2026).docx")) == "hr-leave-sickness-2026"
    assert documents.slug_for(Path("--Ünïcode--.md")) == "n-code"


def test_t0_index_on_a_folder_names_what_it_skipped(folder, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("T0_CONFIG", None)
    data = tmp_path / "data"
    cmd = [sys.executable, "-m", "t0_pipeline.cli", "index", "--documents", str(folder)]
    run = subprocess.run(
        [*cmd, "--data-dir", str(data)], capture_output=True, text=True, env=env, timeout=600
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "skipped: scan.pdf: no text layer: needs OCR" in run.stderr
    assert "skipped: locked.pdf: encrypted" in run.stderr
    assert "crawl: 7 files: 7 new" in run.stdout and "bm25 summaries: 7 documents" in run.stdout
    query = [sys.executable, "-m", "t0_pipeline.cli", "query", "--data-dir", str(data)]
    found = subprocess.run(
        [*query, "how do I work from home on the office network"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert found.returncode == 0, found.stderr[-2000:]
    first = found.stdout.splitlines()[1].split()
    assert first[:1] == ["1"] and first[2] == "network-vpn-guide", found.stdout
    conditions = pl.read_parquet(DataPaths(data).conditions)
    assert "network-vpn-guide" in conditions["slug"].to_list()


def test_the_corpus_fingerprint_follows_the_folder(folder):
    from t0_pipeline.corpus.crawl import corpus_fingerprint

    source = SourceConfig(kind="documents", location=str(folder))
    before = corpus_fingerprint(source)
    assert corpus_fingerprint(source) == before  # what the corpus-change sensor compares
    (folder / "phones.txt").write_text("Desk phones: dial 7 for an outside line from now on.\n")
    assert corpus_fingerprint(source) != before


# an asker's words, none of them an article's title
IT_DESK_QUESTIONS = {
    "I typed my work password into a page that an email sent me to": "clicked-phishing-link",
    "left my work laptop on the train this morning": "laptop-stolen",
    "people outside say my voice keeps cutting out on calls": "teams-audio-not-working",
    "the second screen on my desk stays black": "external-monitor-no-signal",
    "I saved over yesterday's spreadsheet by mistake, can I get it back": "file-deleted-restore",
    "all my files have odd endings and a note asks for bitcoin": "ransomware-message",
}


def mixed_copy(articles: Path, dest: Path) -> dict[str, str]:
    """The articles copied to ``dest``, three of them as a PDF, a DOCX and an HTML page instead of
    Markdown; returns {slug: title} of those three."""
    import shutil

    shutil.copytree(articles, dest)
    made = {}
    for slug, kind in (
        ("clicked-phishing-link", "pdf"),
        ("laptop-stolen", "docx"),
        ("ransomware-message", "html"),
    ):
        source = dest / f"{slug}.md"
        heading, *rest = source.read_text(encoding="utf-8").splitlines()
        title = heading.lstrip("# ").strip()
        lines = [line.lstrip("#- ").strip() for line in rest if line.strip()]
        if kind == "pdf":
            make_pdf(dest / f"{slug}.pdf", lines, title=title)
        elif kind == "docx":
            make_docx(dest / f"{slug}.docx", None, title, lines)
        else:
            body = "".join(f"<p>{line}</p>" for line in lines)
            (dest / f"{slug}.html").write_text(
                f"<html><head><title>{title}</title></head><body><nav>Desk home | Tickets</nav>"
                f"<main>{body}</main><footer>Kestrel IT</footer></body></html>",
                encoding="utf-8",
            )
        source.unlink()
        made[slug] = title
    return made


def test_the_it_desk_example_is_a_corpus_that_answers_its_questions(tmp_path, embedder):
    from t0_pipeline.config import PipelineConfig
    from t0_pipeline.corpus.clean import run_clean
    from t0_pipeline.corpus_to_index import build_indexes
    from t0_pipeline.retrieval.retrieve import Retriever
    from t0_pipeline.synthetic.summarise import run_summarise

    articles = Path(__file__).resolve().parents[1] / "examples" / "it-desk" / "articles"
    folder = tmp_path / "articles"
    converted = mixed_copy(articles, folder)
    cfg = PipelineConfig(source=SourceConfig(kind="documents", location=str(folder)))
    paths = DataPaths(tmp_path / "data")
    df, report = run_crawl(cfg.source, paths)
    assert df.height == 32 and not report.failed
    titles = dict(zip(df["slug"], df["title"]))
    assert {slug: titles[slug] for slug in converted} == converted
    run_clean(paths, cfg.source, cfg.clean)
    run_summarise(paths, cfg.summary)
    build_indexes(cfg, paths, embedder=embedder)
    retriever = Retriever("summaries", paths, cfg.embedding, cfg.chroma, cfg.retrieval, embedder)
    for question, slug in IT_DESK_QUESTIONS.items():
        top = [hit.slug for hit in retriever.search(question, k=3)]
        assert slug in top, (question, top)
