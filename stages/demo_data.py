"""DVC stage demo_data: write the synthetic demo set when the pipeline reads it (params: demo, data.root)."""

from emocare.data.demo import build_if_used
from emocare.params import load_params

if __name__ == "__main__":
    p = load_params()
    print(build_if_used("data/demo", p["data"]["root"], p["demo"]["posts"], p["demo"]["seed"]))
