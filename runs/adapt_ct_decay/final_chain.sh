for seed in 0 1 2; do
  echo "== final seed $seed 3 min $(date -u +%H:%M:%S)"
  OMP_NUM_THREADS=2 python runs/adapt_ct_decay/run_final.py $seed 3 2>&1 | grep -v "warn\|Invalid value\|exceeds the maximum\|reader warn\|UI:"
done
