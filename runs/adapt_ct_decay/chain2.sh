# Levels read on every plane (training and held back), learning rate decayed, 3 minutes.
for dose in "0.5 0.7" "0.1 1.0"; do for seed in 0 1 2; do
  echo "== dose $dose seed $seed share 0 all-plane levels $(date -u +%H:%M:%S)"
  OMP_NUM_THREADS=2 python runs/adapt_ct_decay/ensemble.py $dose $seed 3 0 2>&1 | grep -v "warn\|Invalid value\|exceeds the maximum\|reader warn"
done; done
