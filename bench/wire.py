"""A participant without a browser: Streamlit's websocket protocol, spoken as our page speaks it.

A room of 20 Chromium pages on one spare core measures the simulated laptops, not the server
(bench/RESULTS.md, #28). `WireParticipant` puts the same load on the server without drawing
anything: it opens a page, keeps its fragments' timers as Streamlit's frontend does, clicks a
button by its label, and stamps the moment the answer arrives on the wire. What it sends was
taken from a real page's traffic (`rerun_script` messages: the page's query string, which the
app rewrites, the page's script hash after the first run, the fragment's id on a timer's tick):

- a full run (`new_session` whose run names no fragment) cancels every fragment timer, and
  each `auto_rerun` (re)starts one, unless it has that interval already;
- `stop_auto_rerun` cancels the named timers; `page_info_changed` replaces the query string.

Where it differs from a page, knowingly:
- it sends only the widget it presses, where a page sends every widget's value (29 on
  Unlearn): the server then keeps the values of the run before, which for an untouched page
  are the same;
- it sends no `cached_message_hashes`, so the server sends whole messages where a page that
  has seen one may get a reference (a little more work for the server, not less), and no
  heartbeats;
- a page fetches files as it draws (Streamlit's lazily loaded scripts, our component's page,
  plotly.js); given them (`fetch`: the URLs a real page fetched between its click and its
  film), the participant fetches them once, one by one in a thread of their own, when its
  answer comes, where the page spreads them over its answer and its film.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Sequence
from urllib.parse import urlsplit

from streamlit.proto.Alert_pb2 import Alert
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

DONE = re.compile(r"^Run \w+ done\.")


class WireParticipant(threading.Thread):
    """One participant on `url`'s page `page` with `query`: `ready` is set once the page's
    first run has finished with a `button` on it; `click_at(t)` presses that button at wall
    time t (seconds); `click` and `done` are wall times (None: not yet); `trouble` is the
    first exception or error alert the page was sent after the click."""

    def __init__(self, url: str, page: str, query: str, button: str = "Run",
                 answer: re.Pattern = DONE, fetch: Sequence[str] = ()):
        super().__init__(daemon=True)
        self.url, self.page, self.query, self.fetch = url, page, query, list(fetch)
        self.fetched = 0  # bytes of `fetch` read
        self.button, self.answer = button, answer
        self.button_id: str | None = None
        self.page_hash = ""
        self.timers: dict[str, tuple[float, float]] = {}  # fragment id: (interval, next tick)
        self.ready, self.stop = threading.Event(), threading.Event()
        self.press_at: float | None = None
        self.click = self.done = None
        self.trouble: str | None = None
        self.sent = self.received = 0
        self.ticks: list[float] = []  # when each fragment timer's rerun was sent
        self.log: list[tuple[float, str]] | None = None  # a list: every message, for debugging

    def click_at(self, when: float) -> None:
        self.press_at = when

    def rerun(self, ws, fragment: str = "", press: str | None = None) -> None:
        msg = BackMsg()
        state = msg.rerun_script
        state.query_string = self.query
        if self.page_hash:
            state.page_script_hash = self.page_hash
        else:
            state.page_name = self.page
        state.fragment_id = fragment
        state.is_auto_rerun = bool(fragment)
        state.context_info.timezone = "UTC"
        state.context_info.locale = "en-US"
        state.context_info.url = f"{self.url}/{self.page}"
        state.widget_states.SetInParent()
        if press:
            widget = state.widget_states.widgets.add()
            widget.id, widget.trigger_value = press, True
        ws.send(msg.SerializeToString())
        self.sent += 1
        if self.log is not None:
            self.log.append((time.time(), f"> rerun {fragment[:8]} {press or ''} {self.query}"))

    def run(self) -> None:
        try:
            self.talk()
        except ConnectionClosed as closed:  # the server stopped: the round is over
            if not self.stop.is_set() and self.trouble is None:
                self.trouble = f"the server closed the page's connection ({closed})"
        except Exception as err:  # noqa: BLE001 - said in the report, not lost with the thread
            if self.trouble is None:
                self.trouble = f"{type(err).__name__}: {err}"

    def talk(self) -> None:
        host = urlsplit(self.url).netloc
        with connect(f"ws://{host}/_stcore/stream", subprotocols=["streamlit"],
                     max_size=None, open_timeout=60) as ws:
            self.rerun(ws)
            while not self.stop.is_set():
                now = time.time()
                if self.press_at is not None and now >= self.press_at and self.click is None:
                    if self.button_id is None:
                        self.trouble = f"no {self.button!r} button on the page"
                        return
                    self.click = time.time()
                    self.rerun(ws, press=self.button_id)
                for fragment, (interval, due) in list(self.timers.items()):
                    if now >= due:  # a late timer fires once, as setInterval does, no backlog
                        later = due + interval
                        self.timers[fragment] = (interval, later if later > now else
                                                 now + interval)
                        self.ticks.append(now)
                        self.rerun(ws, fragment=fragment)
                dues = [due for _, due in self.timers.values()]
                if self.press_at is not None and self.click is None:
                    dues.append(self.press_at)
                wait = max(0.0, min(dues, default=now + 0.5) - time.time())
                try:
                    data = ws.recv(timeout=min(wait, 0.5))
                except TimeoutError:
                    continue
                self.received += 1
                msg = ForwardMsg()
                msg.ParseFromString(data)
                self.handle(msg)
                if self.done is not None and self.fetch:
                    todo, self.fetch = self.fetch, []
                    threading.Thread(target=self.fetch_files, args=(todo,), daemon=True).start()

    def fetch_files(self, todo: list[str]) -> None:
        """The files the page would fetch to draw its first answer, once, one by one, beside
        the page's own traffic (a browser's loads do not hold up its websocket)."""
        for address in todo:
            try:
                with urllib.request.urlopen(address, timeout=30) as answer:
                    self.fetched += len(answer.read())
            except OSError as err:
                if self.trouble is None:
                    self.trouble = f"fetching {address}: {err}"

    def handle(self, msg: ForwardMsg) -> None:
        kind = msg.WhichOneof("type")
        if self.log is not None:
            self.log.append((time.time(), f"< {kind} {list(msg.metadata.run.fragment_ids)}"))
        if kind == "new_session" and not msg.metadata.run.fragment_ids:
            self.timers.clear()
        elif kind == "navigation":  # the page's own script (new_session names app.py's)
            self.page_hash = msg.navigation.page_script_hash or self.page_hash
        elif kind == "auto_rerun":
            fragment, interval = msg.auto_rerun.fragment_id, msg.auto_rerun.interval
            if self.timers.get(fragment, (None,))[0] != interval:
                self.timers[fragment] = (interval, time.time() + interval)
        elif kind == "stop_auto_rerun":
            for fragment in msg.stop_auto_rerun.fragment_ids:
                self.timers.pop(fragment, None)
        elif kind == "page_info_changed":
            self.query = msg.page_info_changed.query_string
        elif kind == "script_finished" and self.button_id is not None:
            self.ready.set()
        elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
            self.element(msg.delta.new_element)

    def element(self, element) -> None:
        kind = element.WhichOneof("type")
        if self.log is not None and kind in ("alert", "exception", "markdown"):
            text = getattr(element, kind).body if kind != "exception" else element.exception.message
            self.log.append((time.time(), f"  {kind}: {text[:100]!r}"))
        if kind == "button" and element.button.label == self.button:
            self.button_id = element.button.id
        elif self.click is None:
            return
        elif kind == "alert":
            body = element.alert.body.strip()
            if element.alert.format == Alert.SUCCESS and self.answer.match(body):
                if self.done is None:
                    self.done = time.time()
            elif element.alert.format == Alert.ERROR and self.trouble is None:
                self.trouble = body.splitlines()[0][:200]
        elif kind == "exception" and self.trouble is None:
            self.trouble = element.exception.message[:200] or element.exception.type
