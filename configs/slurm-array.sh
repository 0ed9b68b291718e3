#!/bin/bash
# A Slurm job array: 8 tasks, each encoding one shard of the corpus on one GPU. Submit with
#   sbatch configs/slurm-array.sh
# and merge once all tasks are done (here as a dependent job):
#   sbatch --dependency=afterok:<job id> --wrap "pool-encode merge --output /shared/out/embeddings.npy"
# A requeued (preempted) task resumes its shard from its checkpoint (resume = true in the config).
#SBATCH --job-name=pool-encode
#SBATCH --array=0-7            # contiguous, no step: --shard auto reads the task id and count
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --requeue
#SBATCH --output=logs/pool-encode-%A_%a.log

set -euo pipefail
# SLURM_ARRAY_TASK_ID (less SLURM_ARRAY_TASK_MIN) is the shard, SLURM_ARRAY_TASK_COUNT the count.
exec pool-encode encode --config configs/sharded.toml --shard auto --devices cuda:0
