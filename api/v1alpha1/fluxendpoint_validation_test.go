package v1alpha1_test

import (
	"context"
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// testFluxEndpoints creates good and malformed FluxEndpoints through the real API server (strict
// field validation) and checks that the CRD's schema and CEL rules reject every malformed
// spec.connection with a message naming the problem. What the API server cannot know (a Secret
// or pod that does not exist) is reported in the FluxEndpoint's status by the controller
// (controllers tests).
func testFluxEndpoints(ctx context.Context, t *testing.T, c client.Client) {
	cases := []struct {
		name string
		spec string
		want []string // substrings of the rejection; nil: accepted
	}{
		{name: "local", spec: "connection: {uri: \"local:///run/flux/local\"}\nnamespaceSelector: {}\n"},
		{name: "ssh", spec: "connection: {uri: \"ssh://fluxuser@login.example.org:2222/run/flux/local\", secretRef: {name: hpc-ssh}}\n" +
			"namespaceSelector: {matchLabels: {hpc: \"true\"}}\nexecutor: {workers: 4, eventSource: Journal}\n"},
		{name: "minicluster", spec: "connection: {miniCluster: {namespace: flux-operator, name: flux-sample}}\n"},
		{name: "minicluster-overrides", spec: "connection: {miniCluster: {namespace: ns, name: mc, container: flux, socketPath: /opt/flux/local, command: [/bin/sh, -c, \"exec flux relay $0\"]}}\n"},
		{name: "pod-name", spec: "connection: {pod: {namespace: ns, name: broker-0, container: flux, socketPath: /run/flux/local}}\n"},
		{name: "pod-selector", spec: "connection: {pod: {namespace: ns, selector: {matchLabels: {app: flux}}, owner: {kind: StatefulSet, name: flux}, socketPath: /run/flux/local}}\n"},
		{name: "pod-selector-without-owner", spec: "connection: {pod: {namespace: ns, selector: {matchLabels: {app: flux}}, socketPath: /run/flux/local}}\n",
			want: []string{"connection.pod.selector needs connection.pod.owner"}},

		{name: "no-connection", spec: "namespaceSelector: {}\n", want: []string{"spec.connection: Required value"}},
		{name: "empty-connection", spec: "connection: {}\n", want: []string{"give exactly one of connection.uri, connection.miniCluster and connection.pod"}},
		{name: "uri-and-pod", spec: "connection: {uri: \"local:///run/flux/local\", pod: {namespace: ns, name: p, socketPath: /s}}\n",
			want: []string{"give exactly one of connection.uri, connection.miniCluster and connection.pod"}},
		{name: "minicluster-and-pod", spec: "connection: {miniCluster: {namespace: ns, name: mc}, pod: {namespace: ns, name: p, socketPath: /s}}\n",
			want: []string{"give exactly one of"}},
		{name: "tcp-uri", spec: "connection: {uri: \"tcp://10.0.0.1:8050\"}\n", want: []string{"connection.uri must be local:///PATH or ssh://"}},
		{name: "relative-local", spec: "connection: {uri: \"local://run/flux/local\"}\n", want: []string{"connection.uri must be"}},
		{name: "ssh-no-path", spec: "connection: {uri: \"ssh://host\", secretRef: {name: k}}\n", want: []string{"connection.uri must be"}},
		{name: "ssh-bad-port", spec: "connection: {uri: \"ssh://host:port/run/flux/local\", secretRef: {name: k}}\n", want: []string{"connection.uri must be"}},
		{name: "ssh-without-secret", spec: "connection: {uri: \"ssh://host/run/flux/local\"}\n", want: []string{"needs connection.secretRef"}},
		{name: "secret-with-local", spec: "connection: {uri: \"local:///run/flux/local\", secretRef: {name: k}}\n", want: []string{"secretRef goes with an ssh://"}},
		{name: "secret-bad-name", spec: "connection: {uri: \"ssh://h/s\", secretRef: {name: \"Bad_Name\"}}\n", want: []string{"secretRef.name"}},
		{name: "minicluster-no-name", spec: "connection: {miniCluster: {namespace: ns}}\n", want: []string{"miniCluster.name: Required value"}},
		{name: "minicluster-relative-socket", spec: "connection: {miniCluster: {namespace: ns, name: mc, socketPath: run/local}}\n", want: []string{"socketPath must be an absolute path"}},
		{name: "minicluster-empty-command", spec: "connection: {miniCluster: {namespace: ns, name: mc, command: []}}\n", want: []string{"command"}},
		{name: "pod-name-and-selector", spec: "connection: {pod: {namespace: ns, name: p, selector: {matchLabels: {a: b}}, socketPath: /s}}\n",
			want: []string{"give exactly one of connection.pod.name and connection.pod.selector"}},
		{name: "pod-neither", spec: "connection: {pod: {namespace: ns, socketPath: /s}}\n", want: []string{"give exactly one of connection.pod.name and connection.pod.selector"}},
		{name: "pod-no-socket", spec: "connection: {pod: {namespace: ns, name: p}}\n", want: []string{"socketPath: Required value"}},
		{name: "pod-bad-namespace", spec: "connection: {pod: {namespace: NS!, name: p, socketPath: /s}}\n", want: []string{"pod.namespace"}},
		{name: "workers-zero", spec: "connection: {uri: \"local:///s\"}\nexecutor: {workers: 0}\n", want: []string{"executor.workers", "greater than or equal to 1"}},
		{name: "event-source-unknown", spec: "connection: {uri: \"local:///s\"}\nexecutor: {eventSource: Poll}\n", want: []string{"executor.eventSource", "Unsupported value"}},
		{name: "accounts", spec: "connection: {uri: \"ssh://fluxbot@login.example.org/run/flux/local\", secretRef: {name: bot}}\nnamespaceSelector: {}\n" +
			"accounts: [{name: chem, user: chem-robot, namespaceSelector: {matchLabels: {dept: chem}}, secretRef: {name: chem-ssh}, mungeSocket: /run/munge/munge.socket.2}]\nunmappedNamespaces: Refuse\n"},
		{name: "accounts-local", spec: "connection: {uri: \"local:///run/flux/local\"}\naccounts: [{name: a, namespaceSelector: {}, secretRef: {name: s}}]\n",
			want: []string{"spec.accounts needs an ssh:// connection.uri"}},
		{name: "accounts-duplicate", spec: "connection: {uri: \"ssh://h/s\", secretRef: {name: k}}\naccounts: [{name: a, namespaceSelector: {}, secretRef: {name: s}}, {name: a, namespaceSelector: {}, secretRef: {name: t}}]\n",
			want: []string{"Duplicate value"}},
		{name: "accounts-no-secret", spec: "connection: {uri: \"ssh://h/s\", secretRef: {name: k}}\naccounts: [{name: a, namespaceSelector: {}}]\n",
			want: []string{"secretRef: Required value"}},
		{name: "accounts-bad-user", spec: "connection: {uri: \"ssh://h/s\", secretRef: {name: k}}\naccounts: [{name: a, user: \"x@y\", namespaceSelector: {}, secretRef: {name: s}}]\n",
			want: []string{"accounts[0].user"}},
		{name: "accounts-relative-munge", spec: "connection: {uri: \"ssh://h/s\", secretRef: {name: k}}\naccounts: [{name: a, namespaceSelector: {}, secretRef: {name: s}, mungeSocket: run/m}]\n",
			want: []string{"mungeSocket must be an absolute path"}},
		{name: "accounts-curve", spec: "connection: {uri: \"ssh://h/s\", secretRef: {name: k}}\naccounts: [{name: a, namespaceSelector: {}, secretRef: {name: s}, signing: Curve}]\n"},
		{name: "accounts-signing-unknown", spec: "connection: {uri: \"ssh://h/s\", secretRef: {name: k}}\naccounts: [{name: a, namespaceSelector: {}, secretRef: {name: s}, signing: None}]\n",
			want: []string{"signing", "Unsupported value"}},
		{name: "unmapped-unknown", spec: "connection: {uri: \"ssh://h/s\", secretRef: {name: k}}\nunmappedNamespaces: Owner\n",
			want: []string{"unmappedNamespaces", "Unsupported value"}},
		{name: "unknown-field", spec: "connection: {uri: \"local:///s\", tcp: true}\n", want: []string{"unknown field"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := fmt.Sprintf("apiVersion: fluxjob.io/v1alpha1\nkind: FluxEndpoint\nmetadata:\n  name: fi-%s\nspec:\n%s", tc.name, indent(tc.spec, "  "))
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
				t.Fatalf("bad test manifest: %v\n%s", err, doc)
			}
			createExpect(ctx, t, c, u, tc.want)
		})
	}
}
