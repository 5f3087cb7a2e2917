"""clipscope analysis and figures: pure functions on the tensors models/ captures, and Plotly figure builders.

Never imports gradio: the app and the notebooks call the same functions.
"""
