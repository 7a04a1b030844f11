"""bench/load_test.py: loopback only, bounded, and its figures add up against the running app."""

import time

import pytest

from bench import load_test


@pytest.mark.parametrize("url", ["http://127.0.0.1:7860/", "http://127.8.9.10:80", "http://localhost:1/",
                                 "http://[::1]:7860/"])
def test_loopback_urls_are_accepted(url):
    assert load_test.require_loopback(url) == url


@pytest.mark.parametrize("url", ["http://0.0.0.0:7860/", "http://192.168.1.2:7860/", "https://example.com/",
                                 "http://localhost.example.com/", "http://[::]:7860/", "not a url"])
def test_other_addresses_are_refused(url):
    with pytest.raises(load_test.LoadTestError, match="only talks to loopback"):
        load_test.require_loopback(url)


def test_cli_refuses_a_remote_url_with_exit_code_2(capsys):
    assert load_test.main(["--url", "http://10.0.0.1:7860/", "--requests", "1"]) == 2
    assert "only talks to loopback" in capsys.readouterr().err


@pytest.mark.parametrize("arguments", [["--requests", "0"], ["--requests", "100000"], ["--timeout", "0"]])
def test_unbounded_runs_are_refused(arguments):
    with pytest.raises(SystemExit) as exit_info:
        load_test.parse_args(arguments)
    assert exit_info.value.code == 2


def test_concurrency_never_exceeds_the_requests():
    assert load_test.parse_args(["--requests", "4", "--concurrency", "16"]).concurrency == 4
    assert load_test.parse_args([]).concurrency == 32


def test_summary_counts_and_percentiles():
    summary = load_test.summarise([0.1, 0.2, 0.3, 0.4, 1.0], ["timeout", "timeout", "AppError: full"], 2.0)
    assert summary["ok"] == 5 and summary["errors"] == 3
    assert summary["error_messages"] == {"timeout": 2, "AppError: full": 1}
    assert summary["latency_seconds"]["p50"] == 0.3 and summary["latency_seconds"]["max"] == 1.0
    assert summary["requests_per_second"] == 2.5
    assert load_test.summarise([], [], 1.0)["latency_seconds"]["p50"] is None


def test_concurrent_requests_against_the_app(app_server, tmp_path):
    photo = load_test.make_photo(tmp_path / "pet.jpg", 200, 150)
    latencies, errors, wall = load_test.send_requests(app_server.url, photo, "tiny", requests=6, concurrency=3,
                                                      deadline=time.monotonic() + 120)
    assert errors == [] and len(latencies) == 6
    assert 0 < max(latencies) <= wall


def test_requests_past_the_deadline_count_as_errors(app_server, tmp_path):
    photo = load_test.make_photo(tmp_path / "pet.jpg", 200, 150)
    latencies, errors, _ = load_test.send_requests(app_server.url, photo, "tiny", requests=3, concurrency=1,
                                                   deadline=time.monotonic() - 1)
    assert latencies == [] and errors == ["not sent: the time limit was reached"] * 3
