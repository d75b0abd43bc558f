package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
)

// InstanceInfo is what a broker tells about its instance, for a
// FluxEndpoint's status.
type InstanceInfo struct {
	// Version is the broker attribute "version" (flux-core's version).
	Version string
	// Size is the broker attribute "size" (number of brokers).
	Size int32
	// Jobs are job-list's job statistics.
	Jobs fluxjobv1.FluxEndpointJobCounts
	// Queues are the named queues job-list reports statistics for.
	Queues []string
}

// jobStatsResponse is job-list.job-stats' answer (flux-core v0.88.0
// src/modules/job-list/stats.c job_stats_encode).
type jobStatsResponse struct {
	JobStates struct {
		Depend, Priority, Sched, Run, Cleanup, Inactive, Total int64
	} `json:"job_states"`
	Successful, Failed, Canceled, Timeout int64
	Queues                                []struct {
		Name string `json:"name"`
	} `json:"queues"`
}

// attrResponse is attr.get's answer (src/broker/attr.c).
type attrResponse struct {
	Value string `json:"value"`
}

// ReadInstanceInfo asks the broker c is connected to for its version and
// size (attr.get) and job statistics (job-list.job-stats), within timeout.
func ReadInstanceInfo(ctx context.Context, c *flux.Conn, timeout time.Duration) (InstanceInfo, error) {
	var info InstanceInfo
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var ver, size attrResponse
	if err := c.RPC(ctx, "attr.get", map[string]string{"name": "version"}, &ver); err != nil {
		return info, fmt.Errorf("attr.get version: %w", err)
	}
	if err := c.RPC(ctx, "attr.get", map[string]string{"name": "size"}, &size); err != nil {
		return info, fmt.Errorf("attr.get size: %w", err)
	}
	info.Version = fluxjobv1.Clip(ver.Value, 64)
	if n, err := strconv.ParseInt(size.Value, 10, 32); err == nil {
		info.Size = int32(n)
	}
	var st jobStatsResponse
	if err := c.RPC(ctx, "job-list.job-stats", json.RawMessage("{}"), &st); err != nil {
		return info, fmt.Errorf("job-list.job-stats: %w", err)
	}
	s := st.JobStates
	info.Jobs = fluxjobv1.FluxEndpointJobCounts{
		Pending: s.Depend + s.Priority + s.Sched, Running: s.Run + s.Cleanup, Inactive: s.Inactive,
		Successful: st.Successful, Failed: st.Failed + st.Canceled + st.Timeout, Total: s.Total,
	}
	for _, q := range st.Queues {
		if len(info.Queues) < 64 {
			info.Queues = append(info.Queues, fluxjobv1.Clip(q.Name, 128))
		}
	}
	return info, nil
}

// Info reads the instance's InstanceInfo through the control connection.
func (c *Connector) Info(ctx context.Context, timeout time.Duration) (InstanceInfo, error) {
	_, ctl, err := c.Get()
	if err != nil {
		return InstanceInfo{}, err
	}
	return ReadInstanceInfo(ctx, ctl, timeout)
}
