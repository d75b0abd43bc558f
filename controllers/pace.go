package controllers

import (
	"time"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
)

// statusPace is the shortest time between two writes of one FluxJob by
// this controller when the second would write a status that is not final.
// Such a change waits out the rest of the period (the workqueue coalesces
// whatever else happens meanwhile into the same write); a final status is
// written at once. A job that ends within statusPace of its submission so
// gets one status write in all (the final one) instead of one for its job
// ID, one for Running and one for the end. batch/v1 Job's controller paces
// its status the same way (syncJobBatchPeriod, one second).
const statusPace = time.Second

// paceStatus returns how long writing st as obj's status must wait (0:
// write now): the rest of statusPace after this controller's last write of
// obj when st is a change that is not final.
func (r *FluxJobReconciler) paceStatus(obj *fluxjobv1.FluxJob, st fluxjobv1.FluxJobStatus) time.Duration {
	ago, ok := r.written.since(obj.UID, r.now())
	if !ok || ago >= statusPace {
		return 0
	}
	if st.Phase.IsTerminal() || !significantChange(obj.Status, st) {
		return 0
	}
	return statusPace - ago
}
