"""``python -m models.embed``: embed a folder of images (and its captions) into Parquet."""
import sys

from models.embed import main

sys.exit(main())
