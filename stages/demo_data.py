"""DVC stage demo_data: write the synthetic demo set (params: demo)."""

from emocare.data.demo import generate
from emocare.params import load_params

if __name__ == "__main__":
    p = load_params()["demo"]
    print(f"wrote {generate('data/demo', p['posts'], p['seed'])}")
