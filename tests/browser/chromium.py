"""Debian's Chromium for the browser tests: where it is, how it starts, where shots go."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


def watch_stream(chat_testid: str) -> str:
    """JS that records every text length of the newest patient bubble in the chat with this
    test id: a streamed answer grows over many DOM updates, a pasted one in one."""
    select = f"const chat = document.querySelector('[data-testid=\"{chat_testid}\"]');"
    return "() => {\n  " + select + """

  window.__lengths = [];
  new MutationObserver(() => {
    const bubbles = chat.querySelectorAll('[data-testid="patient-bubble"]');
    const last = bubbles[bubbles.length - 1];
    if (!last) return;
    const text = last.querySelector('[data-testid="bubble-text"]').textContent;
    window.__lengths.push([last.dataset.turn, text.length]);
  }).observe(chat, { subtree: true, childList: true, characterData: true });
}"""
