for seed in 1 2; do for share in 0 1; do
  echo "== dose 0.5 seed $seed share $share $(date -u +%H:%M:%S)"
  OMP_NUM_THREADS=2 python runs/adapt_ct_decay/ensemble.py 0.5 0.7 $seed 3 $share 2>&1 | grep -v "warn\|Invalid value\|exceeds the maximum\|reader warn"
done; done
