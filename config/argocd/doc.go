// Package argocd holds the Argo CD resource health check for FluxJob
// (health.lua) and the argocd-cm patch that installs it. The Go code here is
// Evaluate, which runs health.lua the way Argo CD does (for its
// test, and for the e2e tests' check on live objects), and its test.
package argocd
