# The noise's covariance measured on every plane too (COVARIANCE_ALL), levels likewise, decayed rate.
for dose in "0.5 0.7 0" "0.5 0.7 1" "0.5 0.7 2" "0.1 1.0 0"; do
  echo "== dose/seed $dose share 0 all-plane levels and covariance $(date -u +%H:%M:%S)"
  COVARIANCE_ALL=1 OMP_NUM_THREADS=2 python runs/adapt_ct_decay/ensemble.py $dose 3 0 2>&1 | grep -v "warn\|Invalid value\|exceeds the maximum\|reader warn"
done
