"""DVC stage validate: manifest -> data/posts.jsonl, data/quarantine.jsonl, reports/data/validation.json."""

from emocare.data.validate import Rules, validate_manifest, write_validation
from emocare.labels import LabelSet
from emocare.params import load_params

if __name__ == "__main__":
    params = load_params()
    p = params["data"]
    # media outside data.root would escape the stage's deps (and DVC's cache), so it is the media root here
    rules = Rules(labels=LabelSet.from_params(params), require_label=not p["allow_unlabelled"],
                  max_pixels=p["max_image_pixels"], media_root=p["root"])
    result = validate_manifest(p["manifest"], rules)
    print(write_validation(result, "data/posts.jsonl", "data/quarantine.jsonl", "reports/data/validation.json"))
