package main

import (
	_ "time/tzdata" // CronJob time zones, as the upstream kube-apiserver and controller-manager mains do

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

// The three control-plane components, started exactly as their upstream main packages start them.
func init() {
	register("kube-apiserver", func([]string) int { return cli.Run(apiserver.NewAPIServerCommand()) })
	register("kube-controller-manager", func([]string) int { return cli.Run(controllermanager.NewControllerManagerCommand()) })
	register("kube-scheduler", func([]string) int { return cli.Run(scheduler.NewSchedulerCommand()) })
}
