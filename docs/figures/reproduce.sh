#!/usr/bin/env bash
# Rebuild the README's experiment results on the embedded model: two templates (the
# paper's site and threshold, and fnweb's default), an experiment on each, and the PNGs.
#   bash docs/figures/reproduce.sh [WORK_FOLDER]
# About 15-20 minutes per experiment on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
work="${1:-$(mktemp -d)}"
sets="builtin:factual builtin:arithmetic builtin:code builtin:creative builtin:multilingual"
heldout="builtin:factual builtin:arithmetic builtin:code builtin:creative builtin:multilingual builtin:sentiment"

run() {  # name, then buildtemplates' threshold arguments
  local name="$1"; shift
  buildtemplates --model_name_or_path embedded --ica_build_templates_from $sets \
    --ica_template_samples_per_ds 20 --ica_components 10 --max_seq_length 128 \
    --output_file "$work/$name-template.json" "$@"
  fnexperiment embedded "$work/$name-template.json" $heldout --samples_per_dataset 6 --draws 3 \
    --output "$work/$name-experiment" --quiet
  cp "$work/$name-experiment/experiment.json" "docs/figures/$name.json"
  python docs/figures/render_png.py "docs/figures/$name.json" docs/figures "$name"
}

run embedded_mlp_output_z196 --site mlp_output --threshold zscore --zscore_alpha 1.96
run embedded_neurons_p98 --site neurons --threshold percentile --ica_percentile 98
