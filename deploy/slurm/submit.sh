#!/bin/bash
# Grade a class on Slurm in one command: the array of N shards, then the merge after it.
#
#   export GRADER_HIDDEN_SEED=...
#   deploy/slurm/submit.sh submissions/ 8                      # from anywhere
#   deploy/slurm/submit.sh submissions/ 8 --partition=short    # sbatch options for both jobs
#
# Submits grade-class.sbatch as --array=1-N and merge-class.sbatch with
# --dependency=afterok:<the array>, both from the kit's folder (this script's ../..), where the
# reports land: out/shards/I per task, out/class/ merged, out/logs/ the jobs' logs. Prints the two
# job ids, one a line (array first).
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 SUBMISSIONS_FOLDER N [SBATCH_OPTION...]" >&2
    exit 2
fi
submissions=$(realpath -- "$1")
shards=$2
shift 2
[ -d "$submissions" ] || { echo "error: no such folder: $submissions" >&2; exit 2; }
[[ $shards =~ ^[1-9][0-9]*$ ]] || { echo "error: N is the number of shards, like 8, not '$shards'" >&2; exit 2; }
: "${GRADER_HIDDEN_SEED:?export GRADER_HIDDEN_SEED first: every shard must use the same hidden cases}"

cd "$(dirname -- "$(realpath -- "$0")")/../.."
mkdir -p out/logs  # Slurm opens the logs before the job runs
array=$(sbatch --parsable "$@" --array="1-$shards" deploy/slurm/grade-class.sbatch "$submissions" "$shards")
array=${array%%;*}  # "id;cluster" on a multi-cluster setup
merge=$(sbatch --parsable "$@" --dependency="afterok:$array" deploy/slurm/merge-class.sbatch "$shards")
merge=${merge%%;*}
echo "$array"
echo "$merge"
echo "grading: job array $array ($shards tasks, logs in $PWD/out/logs/grade-${array}_*.log);" \
    "merge: job $merge, after the array, into $PWD/out/class/" >&2
