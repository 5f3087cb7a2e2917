"""Soak: 500 mixed requests from 8 clients against the running app, 10% of them bad. Every good request is answered
correctly, every bad one is refused with a message, and the server's resident memory stays flat after warm-up."""
from __future__ import annotations

import random
import threading
import time

import psutil
from app_server import running_app
from gradio_client import Client, handle_file
from PIL import Image

from models import shapes

REQUESTS = 500
CLIENTS = 8
SEED = 636_363  # held out


def test_soak_500_mixed_requests(tmp_path):
    examples = shapes.make_dataset(8, seed=SEED, two_objects_prob=0.0, balanced=True)
    images = []
    for i, example in enumerate(examples):
        images.append((tmp_path / f"{i}.png", example.label))
        example.image.save(images[-1][0])
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff" + b"garbage" * 50)
    Image.new("1", (30_000, 30_000)).save(tmp_path / "bomb.png")
    labels = ", ".join(shapes.class_names())
    zero_shot_answer: dict = {}  # each image's zero-shot top as one lone client got it: the concurrent ones must match

    def zero_shot_top(client, path) -> str:
        return str(client.predict("bundled:mini-clip", handle_file(str(path)), labels, "default: a photo of a {}.", "",
                                  1, api_name="/zero_shot_classify")[0])

    def good(client, rng):
        path, label = rng.choice(images)
        kind = rng.randrange(5)
        if kind == 0:
            result = client.predict("bundled:mini-cnn", handle_file(str(path)), "", api_name="/cnn_analyse")
            value = result[7]["value"] if isinstance(result[7], dict) else result[7]
            return value == label, f"CNN said {value!r} for {label!r}"
        if kind == 1:
            top = zero_shot_top(client, path)
            return top == zero_shot_answer[path], f"zero-shot top {top!r}, alone it was {zero_shot_answer[path]!r}"
        if kind == 2:
            info = client.predict("bundled:mini-clip", handle_file(str(path)), 1, "mean", 1.0,
                                  api_name="/attention_analyse")[-1]
            return "CLS" in info, info
        if kind == 3:
            facts = client.predict("bundled:mini-vit", api_name="/describe_model")[0]
            return "mini-vit" in str(facts), "facts"
        _, text = client.predict(*[rng.uniform(-5, 5) for _ in range(8)], rng.uniform(-1, 1),
                                 api_name="/softmax_sliders")  # the sliders of this client's first prediction
        return "sum to 1.0" in text or "sum to 0.99999" in text, text

    def bad(client, rng):
        kind = rng.randrange(4)
        if kind == 0:
            client.predict("bundled:mini-cnn", handle_file(str(tmp_path / "corrupt.jpg")), "", api_name="/cnn_analyse")
        elif kind == 1:
            client.predict("bundled:mini-clip", handle_file(str(tmp_path / "bomb.png")), labels,
                           "default: a photo of a {}.", "", 1, api_name="/zero_shot_classify")
        elif kind == 2:
            client.predict("bundled:not-a-model", api_name="/describe_model")
        else:
            client.predict("bundled:mini-clip", handle_file(str(images[0][0])), " , ", "default: a photo of a {}.",
                           "", 1, api_name="/zero_shot_classify")

    with running_app() as url:
        server = psutil.Process(url.pid)
        lone = Client(url, verbose=False)
        zero_shot_answer.update({path: zero_shot_top(lone, path) for path, _ in images})
        counts = {"good": 0, "bad_refused": 0}
        failures: list[str] = []
        lock = threading.Lock()
        rss: list[tuple[int, float]] = []
        done = [0]

        def worker(index: int) -> None:
            rng = random.Random(index)
            client = Client(url, verbose=False)
            client.predict("bundled:mini-clip", handle_file(str(images[index][0])), labels,
                           "default: a photo of a {}.", "", 1, api_name="/zero_shot_classify")
            for _ in range(REQUESTS // CLIENTS - 1 + (index < REQUESTS % CLIENTS)):
                if rng.random() < 0.10:
                    try:
                        bad(client, rng)
                        failures.append(f"client {index}: a bad request was answered")
                    except Exception as exc:  # noqa: BLE001 - the refusal is what we want
                        if "Traceback" in str(exc) or not str(exc).strip():
                            failures.append(f"client {index}: refusal without a message: {exc!r}")
                        with lock:
                            counts["bad_refused"] += 1
                else:
                    try:
                        ok, detail = good(client, rng)
                        if not ok:
                            failures.append(f"client {index}: wrong answer: {detail}")
                        with lock:
                            counts["good"] += 1
                    except Exception as exc:  # noqa: BLE001
                        failures.append(f"client {index}: good request failed: {exc}")
                with lock:
                    done[0] += 1
                    if done[0] % 50 == 0:
                        rss.append((done[0], server.memory_info().rss / 2**20))

        start = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - start
        assert Client(url, verbose=False).predict("bundled:mini-vit", api_name="/describe_model")  # still serving
    total = counts["good"] + counts["bad_refused"] + CLIENTS
    warm = [mb for n, mb in rss if n >= 150]
    print(f"soak: {total} requests from {CLIENTS} clients in {seconds:.0f} s; {counts['good']} good answered, "
          f"{counts['bad_refused']} bad refused; server RSS (MB) by request count: "
          + ", ".join(f"{n}: {mb:.0f}" for n, mb in rss))
    assert not failures, failures[:5]
    assert total >= REQUESTS and counts["bad_refused"] >= 20
    # flat after warm-up: the last reading within 10% (and 150 MB) of the first warm one
    assert warm[-1] - warm[0] <= max(0.10 * warm[0], 150), rss
