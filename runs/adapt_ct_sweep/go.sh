#!/bin/bash
# Runs the variants as parallel processes on the GPU; logs and jsonl under $OUT.
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.used --format=csv
V=("phys+q=0.05" "phys+q=0.2" "phys+q=0.3" "phys+q=0.5" "phys+lr=3e-5" "phys+lr=3e-4" "phys+q=0.2+lr=3e-5" "phys+steps=2700" "phys+q=0.2+loss=l2" "phys+q=0.3+lr=3e-5")
for v in "${V[@]}"; do
  OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 python3 .sweep/sweep.py $OUT "$v" >> $OUT/log.txt 2>&1 &
done
wait
grep -i -A3 'Trace' $OUT/log.txt | head -20
grep seconds $OUT/log.txt
echo done
