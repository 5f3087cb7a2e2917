"""The whole view in the page URL: every control that shapes a figure (models, image source, tab, layer, head,
query, ...) writes itself into the query string as it changes (in the browser, no server round trip), and opening
such a URL restores them and draws the view (an uploaded image cannot travel in a link: the page says so).

    ?tab=attention&image=shapes-1&vit_model=bundled:mini-vit&layer=2&head=head+1&query=5
"""
from __future__ import annotations

import json
from collections.abc import Mapping

import gradio as gr

from ui.examples import example_names, example_path
from ui.sessions import STORE

IMAGE_KEY = "image"
TAB_KEY = "tab"
LINK_KEY = "url.link"


def write_js(key: str) -> str:
    """Browser code for an event: put the component's new value into the URL under ``key`` (empty: remove it)."""
    return f"""(value) => {{
  const url = new URL(window.location.href);
  const text = (value === null || value === undefined) ? '' : String(value);
  if (text === '') url.searchParams.delete({json.dumps(key)}); else url.searchParams.set({json.dumps(key)}, text);
  window.history.replaceState(window.history.state, '', url);
  return [];
}}"""


def tab_js(tab_id: str) -> str:
    """Browser code for one tab's select event: put that tab's id into the URL (bound per tab, so it never reads a
    half-updated tab list). Gradio also fires the event for the first tab as the page mounts, before the page load
    has read the link: that first call leaves a link's own tab in place."""
    return f"""() => {{
  const first = !window.__clipscopeTabSeen;
  window.__clipscopeTabSeen = true;
  if (first && new URL(window.location.href).searchParams.has({json.dumps(TAB_KEY)})) return [];
  return ({write_js(TAB_KEY)})({json.dumps(tab_id)});
}}"""


def select_linked_tab_js(tab_labels: Mapping[str, str]) -> str:
    """Browser code run as the page mounts: open the tab the link names (``tab_labels``: id -> label) by clicking
    its button, or its entry in the "more tabs" menu where a narrow window has moved it there.

    In the browser, not as an output of the server's page-load event: gradio re-applies a Tabs output when that
    event answers (even a skip), which on a busy server threw a user who had already opened another tab back to
    the first one. Clicking at mount time has nothing to race with. An unknown id is left to the server's message."""
    return f"""() => {{
  const labels = {json.dumps(dict(tab_labels))};
  const tab = new URL(window.location.href).searchParams.get({json.dumps(TAB_KEY)});
  if (!tab || !(tab in labels)) return [];
  const button = document.querySelector(`button[role=tab][data-tab-id="${{tab}}"]`)
    || [...document.querySelectorAll('.overflow-dropdown button')].find(b => b.textContent.trim() === labels[tab]);
  if (button && button.getAttribute('aria-selected') !== 'true') button.click();
  return [];
}}"""


def link_params(request: gr.Request | None) -> dict:
    """The parameters of the link this page was opened with (stored at page load: the URL changes afterwards)."""
    return STORE.peek(request, LINK_KEY) or {}


def parse_value(component: gr.components.Component, text: str):
    """A URL parameter as the component's value: a number for sliders and number boxes, else the text."""
    if isinstance(component, (gr.Slider, gr.Number)):
        number = float(text)
        return int(number) if number.is_integer() else number
    return text


def restore_updates(params: Mapping[str, str], fields: Mapping[str, gr.components.Component],
                    tab_ids: list[str]) -> tuple[dict, list, str]:
    """What a URL's parameters set: {key: value} for the known fields, the image update (an example's file, or
    skip), and a message naming what could not be restored (an upload, unknown names, bad numbers)."""
    values, problems = {}, []
    for key, component in fields.items():
        if key not in params or key == IMAGE_KEY:
            continue
        try:
            values[key] = parse_value(component, params[key])
        except ValueError:
            problems.append(f"{key}={params[key]!r} is not a number")
    image = gr.skip()
    source = params.get(IMAGE_KEY)
    if source == "upload":
        problems.append("the image was an upload, which a link cannot carry: upload it again")
    elif source:
        if source in example_names():
            image, values[IMAGE_KEY] = example_path(source), source
        else:
            problems.append(f"there is no example image {source!r}")
    if params.get(TAB_KEY) and params[TAB_KEY] not in tab_ids:
        problems.append(f"there is no tab {params[TAB_KEY]!r}")
    message = ("**From the link:** " + "; ".join(problems) + ".") if problems else ""
    return values, [image], message


def bind_url_state(app: gr.Blocks, fields: Mapping[str, gr.components.Component],
                   tab_panels: Mapping[str, gr.Tab], image: gr.Image, message: gr.Markdown):
    """Write every field and the selected tab into the URL as they change, and restore them on page load.

    ``fields``: URL key -> component (``"image"``: the image source textbox: an example's name or "upload");
    ``tab_panels``: the tab's id in the URL -> the tab. Returns the page-load event, for the tabs to chain their first
    drawing onto (they read the link with :func:`link_params`)."""
    for key, component in fields.items():
        component.change(None, component, None, js=write_js(key), api_name=False)
    for tab_id, panel in tab_panels.items():
        panel.select(None, None, None, js=tab_js(tab_id), api_name=False)
    keys, components, tab_ids = list(fields), list(fields.values()), list(tab_panels)

    def restore(request: gr.Request):
        params = dict(request.query_params) if request is not None else {}
        STORE.put(request, LINK_KEY, params)
        values, image_update, text = restore_updates(params, fields, tab_ids)
        updates = [values[key] if key in values else gr.skip() for key in keys]
        return [*updates, *image_update, text if text else gr.skip()]

    app.load(None, None, None, js=select_linked_tab_js({tab_id: panel.label for tab_id, panel in tab_panels.items()}),
             api_name=False)
    return app.load(restore, None, [*components, image, message], api_name=False)
