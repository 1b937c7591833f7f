"""DVC stage report: every report file -> reports/RESULTS.md."""

from emocare.io import write_text
from emocare.labels import LabelSet
from emocare.params import load_params
from emocare.pipeline.report import build_results

if __name__ == "__main__":
    write_text("reports/RESULTS.md", build_results(LabelSet.from_params(load_params()), "reports"))
