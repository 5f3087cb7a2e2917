"""Gradio tabs of the clipscope app: widgets and events only; the work is done by models/ and viz/."""
