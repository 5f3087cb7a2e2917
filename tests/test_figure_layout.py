"""Fitting a figure to its slot: titles, subplot titles and axis titles wrapped at word boundaries (Plotly never
wraps, so long text is cut off at the figure's edge), margins grown to hold the extra lines, a height where a
figure in gr.HTML has none; and the Plot component keeps gr.Plot's own settings."""
from __future__ import annotations

import re

import gradio as gr
import plotly.graph_objects as go

from ui.export import Plot
from ui.figure_layout import NARROW, shown_figure, wrapped

WORDS = ("Cosine similarity of every patch token to the query patch at layer three of the image tower, "
         "drawn per head")


def _visible(line: str) -> str:
    return re.sub(r"<[^>]+>", "", line)


def test_wrapped_lines_fit_and_keep_every_word_in_order():
    for chars in (12, 25, 40, 64):
        lines = wrapped(WORDS, chars).split("<br>")
        assert all(len(_visible(line)) <= chars for line in lines)
        assert " ".join(lines).split() == WORDS.split()
    assert wrapped("short", NARROW) == "short"


def test_small_text_wraps_inside_its_tags_and_other_markup_is_never_split():
    text = "Title<br><sup>" + "a subtitle in small print that runs on " * 3 + "</sup>"
    lines = wrapped(text, 40).split("<br>")
    assert lines[0] == "Title" and len(lines) > 2
    assert all(line.startswith("<sup>") and line.endswith("</sup>") for line in lines[1:])
    marked = "a <b>bold</b> word in a line much longer than twenty characters"
    assert wrapped(marked, 20) == marked


def test_a_short_bracketed_group_stays_on_one_line():
    lines = wrapped("stages.2: mean over channels, unit (3, 1) and more", 36).split("<br>")
    assert any("(3, 1)" in line for line in lines) and all(len(line) <= 36 for line in lines)


def test_the_margin_and_height_grow_by_the_lines_added():
    figure = go.Figure(layout={"title": {"text": WORDS}, "height": 400, "margin": {"t": 50},
                               "xaxis": {"title": {"text": WORDS}}})
    fitted = shown_figure(figure.to_plotly_json(), NARROW)
    extra = fitted["layout"]["title"]["text"].count("<br>")
    assert extra >= 2
    assert fitted["layout"]["margin"]["t"] == 50 + 22 * extra and fitted["layout"]["height"] == 400 + 22 * extra
    assert "<br>" in fitted["layout"]["xaxis"]["title"]["text"]
    assert fitted["config"]["toImageButtonOptions"]["format"] == "png"


def test_a_figure_without_height_gets_one_only_when_asked():
    bare = go.Figure(layout={"title": {"text": "t"}}).to_plotly_json()
    assert "height" not in shown_figure(dict(bare), NARROW)["layout"]
    assert shown_figure(go.Figure().to_plotly_json(), NARROW, default_height=True)["layout"]["height"] == 450


def test_the_plot_component_keeps_gr_plots_settings():
    with gr.Blocks():
        plot = Plot(label="Feature maps", title_chars=NARROW)
    config = plot.get_config()
    assert config["label"] == "Feature maps" and plot.title_chars == NARROW and "title_chars" not in config


def test_top_row_subplot_titles_wrapped_upwards_get_room_above_the_plot():
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=2, cols=1, subplot_titles=(WORDS, "short"))
    figure.update_layout(title={"text": WORDS}, height=500, margin={"t": 60})
    fitted = shown_figure(figure.to_plotly_json(), NARROW)
    title_lines = fitted["layout"]["title"]["text"].count("<br>")
    subplot_lines = fitted["layout"]["annotations"][0]["text"].count("<br>")
    assert title_lines >= 2 and subplot_lines >= 2 and fitted["layout"]["annotations"][1]["text"] == "short"
    assert fitted["layout"]["margin"]["t"] == 60 + 22 * (title_lines + subplot_lines)
