"""DVC stage validate: manifest -> data/posts.jsonl, data/quarantine.jsonl, reports/data/validation.json."""

from emocare.data.validate import validate_manifest, write_validation
from emocare.params import load_params

if __name__ == "__main__":
    p = load_params()["data"]
    result = validate_manifest(p["manifest"], require_label=not p["allow_unlabelled"], max_pixels=p["max_image_pixels"])
    print(write_validation(result, "data/posts.jsonl", "data/quarantine.jsonl", "reports/data/validation.json"))
