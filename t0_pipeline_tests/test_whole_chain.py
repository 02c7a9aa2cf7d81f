"""The whole chain on a real model, as `make demo` runs it: every asset of the graph, each model
role the real SmolLM2-135M-Instruct served by the pipeline's model-server resource (the CPU server,
litellm's real client), a real fine-tune and budget-forced evaluation. Only the sizes are smaller
than the demo's."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

DEMO = Path(__file__).resolve().parents[1] / "t0_pipeline" / "demo.yaml"

# the smallest sizes that still exercise every stage (the demo's own are in demo.yaml)
TINY = {
    "T0_QUERIES__N_EVAL": "3",
    "T0_QUERIES__N_TRAIN": "4",
    "T0_QUERIES__MAX_PAGE_CHARS": "400",
    "T0_SUMMARY__MAX_PAGE_CHARS": "300",
    "T0_LLM__ROLES__SUMMARISER__MAX_TOKENS": "16",
    "T0_LLM__ROLES__QUERY_WRITER__MAX_TOKENS": "280",
    # every parsable trace trains (the demo keeps only correct ones, of which 4 queries may have
    # none), for steps enough that the student learns the answer format
    "T0_TRACES__KEEP": "parsable",
    # one looping message in four sets is 75%: the demo's 30 queries meet 0.8
    "T0_QUERIES__MIN_READABLE_SHARE": "0.5",
    # the demo's steps: at 6 a run's student sometimes had not yet learned the format (the CPU
    # server's batching makes each run's traces differ)
    "T0_TRAIN__MAX_STEPS": "12",
    "T0_TRAIN__LEARNING_RATE": "0.0003",
    "T0_TRAIN__SAVE_STEPS": "100",
    "T0_TRAIN__EVAL_STEPS": "100",
    "T0_EVALUATION__MAX_QUERIES": "2",
    "T0_EVALUATION__MODELS__SMOLLM2-135M__MAX_TOKENS": "24",
    "T0_EVALUATION__MODELS__T0-135M__BUDGET": json.dumps(
        {"thinking_budget": 128, "max_waits": 0, "answer_tokens": 24}
    ),
}
ASSETS = [
    "base_models",
    "condition_pages",
    "conditions",
    "summaries",
    "full_page_index",
    "summary_index",
    "full_page_bm25",
    "summary_bm25",
    "eval_queries",
    "retrieval_report",
    "llm_summaries",
    "llm_summary_index",
    "summary_comparison",
    "synthetic_queries",
    "reasoning_traces",
    "sft_dataset",
    "student_checkpoint[135M]",
    "accuracy_report[retrieval-baseline]",
    "accuracy_report[smollm2-135m]",
    "accuracy_report[t0-135m]",
    "accuracy_comparison",
]


def run_all(root: Path, config: Path, **env_extra: str) -> tuple[Path, dict, str]:
    """`t0 run-all --config CONFIG` at the smallest sizes (:data:`TINY`) with its own Dagster home
    and data folder under ``root``, from the repository's root: (data folder, env, what it
    printed)."""
    home, data = root / "dagster", root / "data"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        **TINY,
        "DAGSTER_HOME": str(home),
        "T0_DATA_DIR": str(data),
        "HF_HUB_OFFLINE": "1",
        **env_extra,
    }
    env.pop("T0_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "t0_pipeline.cli", "run-all", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=2100,
        cwd=DEMO.parents[1],
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return data, env, done.stdout


@pytest.fixture(scope="module")
def chain(tmp_path_factory, smollm2_gguf):
    """The demo's config at the smallest sizes, every asset materialised: (data folder, env, what
    `t0 run-all` printed)."""
    return run_all(tmp_path_factory.mktemp("chain"), DEMO)


# ~3.5 min on a quiet 2-core machine and past 10 on a loaded one: the bound only catches a hang
@pytest.mark.timeout(2400)
def test_every_asset_materialises_with_the_bundled_model_in_every_role(chain):
    data, _, out = chain
    table = out[out.index("Time per stage") : out.index("Retrieval p@k")]
    for asset in ASSETS:  # each one a successful Dagster run, its checks evaluated
        assert f"| {asset} |" in table, f"{asset} missing from\n{table}"
    # no ERROR check fails (a WARN may: 16 summariser tokens sometimes give an empty summary,
    # reported per page)
    failed = [line for line in table.splitlines() if "(ERROR)" in line]
    assert not failed, failed
    assert (
        "| summaries | dense |" in out
        and "| t0-135m | fine-tuned | 135M |" in out
        and "Stand-in:" in out
    )

    # every role was served by the pipeline itself, from the converted checkpoint or the trained
    # student
    logs = sorted(p.name for p in (data / "servers").glob("*.log"))
    # summariser, writer, teacher, base
    assert sum(name.startswith("smollm2-135m-instruct-") for name in logs) == 4
    assert sum(name.startswith("t0-135m-") for name in logs) == 1  # the student, from its final/

    # structured output: every query and every trace parses (a 135M model writes valid JSON only
    # when constrained)
    queries = pl.read_parquet(data / "synthetic" / "queries_train.parquet")
    assert queries.height >= 1 and queries["query"].str.len_chars().min() >= 40
    traces = pl.read_parquet(data / "synthetic" / "traces.parquet")
    assert (
        traces["parsable"].all() and traces["condition_in_retrieved"].all() and traces["kept"].any()
    )

    # the student is a real fine-tune of the converted base, evaluated with budget forcing against
    # it
    metrics = json.loads((data / "students" / "135M" / "metrics.json").read_text())
    assert metrics["global_step"] == 12 and metrics["config"]["model"].endswith(
        "models/smollm2-135m-instruct"
    )
    student = json.loads((data / "eval" / "accuracy" / "t0-135m" / "summary.json").read_text())
    base = json.loads((data / "eval" / "accuracy" / "smollm2-135m" / "summary.json").read_text())
    assert (
        student["served_checkpoint"].endswith("students/135M/final")
        and student["queries"] == base["queries"] == 2
    )
    predictions = pl.read_parquet(data / "eval" / "accuracy" / "t0-135m" / "predictions.parquet")
    assert (
        predictions.height == 2 * len(student["ks"])
        and predictions["thinking"].str.len_chars().max() > 0
    )
    # fine-tuning taught the answer format: more of the student's answers parse than its base's,
    # on the contexts it was trained on (the base SmolLM2 never writes "(condition, level)")
    from t0_pipeline.evaluation.tables import parsable_share

    def in_format(summary: dict) -> float:  # over every k measured (2 queries each)
        return sum(parsable_share(summary["by_k"][str(k)]) or 0.0 for k in summary["ks"])

    assert in_format(student) > in_format(base), (student["by_k"], base["by_k"])
    assert "What fine-tuning taught: t0-135m against its base smollm2-135m" in out
    # the synthetic data a person would read: first-person messages in words, thinking about them
    from t0_pipeline.config import DataPaths
    from t0_pipeline.synthetic.content_checks import corpus_vocabulary, query_content, trace_content

    vocabulary = corpus_vocabulary(DataPaths(data))
    assert query_content(queries, vocabulary, 0.5)[0]["readable_first_person_share"] >= 0.5
    assert trace_content(traces, vocabulary, 0.8)[0]["readable_grounded_share"] >= 0.8


@pytest.mark.timeout(600)
def test_the_students_card_names_its_base_and_data_shows_its_evaluation_and_exports(
    chain, tmp_path
):
    """What a run hands on: final/README.md as a Hugging Face model card (front matter, the base
    by its hub name, the SFT data's digest, the evaluation of these weights), the dataset card's
    counts, the tracker's files, and `t0 export` into a folder the real SmolLM2 student loads and
    chats from alone."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from t0_pipeline.artifacts import file_digest
    from t0_pipeline.cards import read_front_matter
    from t0_pipeline.weights import weights_digest
    from t0_pipeline_tests.tracker_files import logged_scalars

    data, env, _ = chain
    student, sft = data / "students" / "135M", data / "synthetic" / "sft"
    card = (student / "final" / "README.md").read_text()
    head = read_front_matter(card)
    assert head["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert head["library_name"] == "transformers" and head["license_name"] == "ogl-uk-3.0"
    dataset = json.loads((sft / "dataset.json").read_text())
    assert dataset["sha256"] == file_digest(sft / "train.parquet") and dataset["sha256"] in card
    assert f"`{weights_digest(student / 'final')}`" in card
    assert "**Stand-in.**" in card and "Not medical advice" in card and str(data) not in card
    # the evaluation of these weights, at every k, with the base beside it
    assert "Not evaluated yet" not in card
    for row in ("| t0-135m (this model) | 0 |", "| t0-135m (this model) | 3 |", "(its base) | 3"):
        assert row in card
    # the dataset card counts what the dataset holds
    traces = pl.read_parquet(data / "synthetic" / "traces.parquet")
    assert dataset["examples"] == pl.read_parquet(sft / "train.parquet").height
    assert dataset["traces"]["generated"] == traces.height
    assert dataset["traces"]["kept"] == traces["kept"].sum()
    assert f"| traces kept | {traces['kept'].sum()} |" in (sft / "README.md").read_text()
    # the default tracker's run, the loss at each of the 12 steps; the curve beside metrics.json
    (run,) = (student / "runs").iterdir()
    assert sorted(logged_scalars(run)["train/loss"]) == list(range(1, 13))
    assert (student / "loss.png").read_bytes()[:4] == b"\x89PNG"
    handed = tmp_path / "t0-135m"
    cmd = [sys.executable, "-m", "t0_pipeline.cli", "export", "--config", str(DEMO)]
    done = subprocess.run(
        [*cmd, "--size", "135M", "--to", str(handed)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    tokenizer = AutoTokenizer.from_pretrained(handed)
    model = AutoModelForCausalLM.from_pretrained(handed)
    messages = [{"role": "user", "content": "My big toe is hot, red and swollen."}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    budget = model.generation_config.t0_budget_forcing
    inputs = tokenizer(prompt + budget["think_start"], return_tensors="pt")
    reply = model.generate(**inputs, do_sample=False, max_new_tokens=24)
    assert tokenizer.decode(reply[0][inputs["input_ids"].shape[1] :]).strip()


# the real student served: ~1 min of server start and index load, then a turn of ~15 s on 2 cores
@pytest.mark.timeout(900)
def test_the_trained_student_answers_on_the_chat_page_and_to_the_openai_client(chain):
    """`make chat` on the chain's data: `t0 serve` with the demo's config starts the student this
    run trained (its final/) and its base as the agent behind the CPU server; in Chromium a
    question gets a reply whose thinking is behind the toggle and whose sources link to retrieved
    pages; the official `openai` client gets the same student; SIGTERM stops every server."""
    from openai import OpenAI

    from t0_pipeline_tests.serving import free_port
    from t0_pipeline_tests.test_web import CHROMIUM, DESKTOP, open_page, shot

    if CHROMIUM is None and os.environ.get("CI") != "true":
        pytest.skip("no Chromium here; `apt-get install chromium` (CI installs it)")
    data, env, _ = chain
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "t0_pipeline.cli", "serve", "--config", str(DEMO)]
    proc = subprocess.Popen(
        [*command, "--insecure-local", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        health = wait_healthy(url, proc)
        assert set(health["models"]) == {"smollm2-135m", "t0-135m"}, health
        asked = "My big toe is suddenly red, hot and swollen and it hurts to walk."
        answer, thinking, links = ask_in_browser(url, asked, CHROMIUM, open_page, shot, DESKTOP)
        assert answer and "<|im_start|>" not in answer and "The model's answer:" not in answer
        assert "The model's answer: " in thinking  # what the student wrote, behind the toggle
        assert len(links) == 3 and all(href.startswith("http") for href in links)

        client = OpenAI(base_url=url + "/v1", api_key="unused", timeout=300)
        assert [m.id for m in client.models.list().data] == ["t0"]
        reply = client.chat.completions.create(
            model="t0", messages=[{"role": "user", "content": asked}]
        )
        message = reply.choices[0].message
        # one of the plain replies (a condition's page, none fits, or no clear answer)
        assert message.content and "<|im_start|>" not in message.content
        assert any(
            message.content.startswith(opening)
            for opening in (
                "What you describe sounds most like",
                "None of the pages",
                "I could not",
            )
        ), message.content
        assert "The model's answer: " in message.model_extra["reasoning_content"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    # the student from this run's final/, its base from the converted checkpoint; both stopped
    assert f"{data.resolve()}/students/135M/final --served-model-name t0-135m" in out
    assert "model server for t0-135m stopped" in out
    assert "model server for smollm2-135m-instruct stopped" in out
    left = subprocess.run(["pgrep", "-f", f"cpu_server {data.resolve()}"], capture_output=True)
    assert left.stdout.strip() == b""


def wait_healthy(url: str, proc: subprocess.Popen, within_s: float = 400) -> dict:
    import httpx

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read()[-3000:])
        try:
            reply = httpx.get(url + "/healthz", timeout=5)
            if reply.status_code == 200:
                return reply.json()
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"t0 serve was not healthy within {within_s:g} s")


def ask_in_browser(url, text, chromium, open_page, shot, viewport):
    """(answer, thinking, source links) of one question asked on the chat page."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = open_page(browser, viewport)
            page.goto(url)
            page.fill("#input", text)
            page.click("#send")
            done = ".msg.assistant:not([aria-busy]) .answer"
            page.wait_for_function(
                f"document.querySelector({done!r})?.textContent.trim().length > 0",
                timeout=300_000,
            )
            reasoning = page.locator(".msg.assistant details.reasoning").last
            assert not reasoning.evaluate("d => d.open")  # the thinking is folded away
            reasoning.locator("summary").click()
            thinking = reasoning.inner_text()
            links = page.locator(".msg.assistant .sources a")
            hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
            shot(page, "chat-real-student")
            return page.locator(done).inner_text(), thinking, hrefs
        finally:
            browser.close()
