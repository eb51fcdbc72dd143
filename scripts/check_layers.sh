#!/usr/bin/env bash
# check_layers.sh — fails when a library folder includes a header of a folder
# above it (DESIGN.md "The layout": data flows one way). Usage:
#   scripts/check_layers.sh [REPO_ROOT]
# Prints one line per violation ("autograd/ops_quant.c includes qat/qat.h")
# and a summary; exit status 1 when there is any.
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root"

# What each folder may include besides itself (lowest first).
declare -A allowed=(
  [tensor]=""
  [kernels]="tensor"
  [quant]="tensor kernels"
  [autograd]="tensor kernels quant"
  [layers]="tensor kernels quant autograd"
  [qat]="tensor kernels quant autograd layers"
  [optim]="tensor kernels quant autograd layers"
  [format]="tensor"
  [infer]="tensor kernels format"
  [dist]="tensor kernels quant autograd layers"
  [io]="tensor kernels quant autograd layers qat optim format dist"
)

files=0
bad=0
for dir in "${!allowed[@]}"; do
  [ -d "$dir" ] || continue
  for f in "$dir"/*.[ch] "$dir"/*.inc "$dir"/*.def; do
    [ -e "$f" ] || continue
    files=$((files + 1))
    # Quoted includes with a folder: "folder/header.h".
    while IFS= read -r inc; do
      top=${inc%%/*}
      [ "$top" = "$dir" ] && continue
      ok=0
      for a in ${allowed[$dir]}; do [ "$a" = "$top" ] && ok=1; done
      if [ $ok = 0 ]; then
        echo "$f includes $inc (a $dir file may include: $dir ${allowed[$dir]})"
        bad=$((bad + 1))
      fi
    done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([a-z_]*\/[^"]*\)".*/\1/p' "$f")
  done
done
echo "check_layers: $files files in ${#allowed[@]} folders, $bad includes against the layer order"
[ $bad = 0 ]
