// deploy/kubernetes/ checked against the code it deploys: the env by the service's own parseConfig,
// the probes against the running service, the user against the Dockerfile, and every object
// against the Kubernetes API schemas (kubernetes-models, offline).
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { describe, it } from 'node:test'
import { Deployment } from 'kubernetes-models/apps/v1/Deployment'
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget'
import { Service } from 'kubernetes-models/v1/Service'
import { parseAllDocuments } from 'yaml'
import { addOns as entries } from '../cmd/server/main.ts'
import { checkConfig, coreVars, parseConfig, type Vars } from '../internal/config.ts'
import { startService } from './service.ts'

const addOns = await Promise.all(entries.map(async (entry) => (await entry.load()).addOn))
const root = new URL('../', import.meta.url)
const folder = new URL('deploy/kubernetes/', root)
// What the process needs after SHUTDOWN_TIMEOUT at worst (cut connections, flush logs, exit) and
// what the kubelet needs to deliver SIGTERM; the drain must end this long before SIGKILL.
const exitMarginMs = 5000

function read(file: string): unknown[] {
  return parseAllDocuments(readFileSync(new URL(file, folder), 'utf8')).map((doc) => doc.toJS() as unknown)
}

const kustomization = read('kustomization.yaml')[0] as { resources: string[]; images?: { name: string }[] }
const models = {
  'apps/v1/Deployment': Deployment,
  'v1/Service': Service,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
}
const objects = kustomization.resources.flatMap(read).map((doc) => {
  const { apiVersion, kind } = doc as { apiVersion?: string; kind?: string }
  const Model = models[`${apiVersion}/${kind}` as keyof typeof models]
  assert.ok(Model, `test/kubernetes.test.ts knows no ${apiVersion} ${kind}; add its model`)
  return new Model(doc as never)
})
const [deployment, ...otherDeployments] = objects.filter((o) => o instanceof Deployment)
const service = objects.find((o) => o instanceof Service)
const budget = objects.find((o) => o instanceof PodDisruptionBudget)
const pod = deployment?.spec?.template.spec
const container = pod?.containers[0]
const env = Object.fromEntries((container?.env ?? []).map((e) => [e.name, e.value]))
// Every variable the service reads: the core's and those of the add-ons cmd/server/main.ts lists.
const declared: Vars[] = [coreVars, ...addOns.map((addOn) => addOn.vars as Vars)]
const parsed = parseConfig(env, coreVars)
const problems = [
  ...parsed.problems,
  ...checkConfig(parsed.config, env),
  ...declared.flatMap((vars) => parseConfig(env, vars).problems),
]
const config = problems.length === 0 ? parsed.config : undefined

describe('the Kubernetes manifests', () => {
  it('are all listed in kustomization.yaml, one Deployment with one container among them', () => {
    const files = readdirSync(folder).filter((file) => file.endsWith('.yaml') && file !== 'kustomization.yaml')
    assert.deepEqual([...kustomization.resources].sort(), files.sort())
    assert.ok(deployment && service && budget, 'a Deployment, a Service and a PodDisruptionBudget')
    assert.equal(otherDeployments.length, 0)
    assert.equal(pod?.containers.length, 1)
    assert.deepEqual(
      kustomization.images?.map((image) => image.name),
      [container?.image],
    )
  })

  it('validate against the Kubernetes API schemas', () => {
    for (const object of objects)
      assert.doesNotThrow(() => object.validate(), `${object.kind} ${object.metadata?.name}`)
  })

  it('set only variables the service reads, each to a value it accepts', () => {
    assert.ok(container?.env && container.env.length > 0)
    for (const { name, value, valueFrom } of container.env) {
      const vars = declared.find((v) => Object.values(v).some((d) => d.name === name))
      assert.ok(vars, `${name} is not a variable the service or one of its add-ons declares`)
      assert.equal(valueFrom, undefined, `${name} has a literal value, so this test can check it`)
      assert.ok(value, `${name} is set: an empty value means the default`)
      assert.deepEqual(parseConfig({ [name]: value }, vars).problems, [], `${name}=${value}`)
    }
    assert.deepEqual(problems, [])
  })

  it('probe the real routes on the port the service listens on', async (t) => {
    // A port is a number or the name of a container port; either way it must be PORT.
    const named = new Map(container?.ports?.map((p) => [p.name, p.containerPort]))
    const resolve = (port: number | string | undefined) => (typeof port === 'string' ? named.get(port) : port)
    assert.equal(named.get('http'), config?.port, 'the container port named http is PORT')
    assert.equal(resolve(service?.spec?.ports?.[0]?.targetPort), config?.port, "the Service's targetPort")
    const probes = {
      startup: container?.startupProbe,
      liveness: container?.livenessProbe,
      readiness: container?.readinessProbe,
    }
    for (const [kind, probe] of Object.entries(probes)) {
      assert.equal(resolve(probe?.httpGet?.port), config?.port, `${kind} probe port`)
    }
    const path = (kind: keyof typeof probes) => probes[kind]?.httpGet?.path ?? 'no path'

    // The service as the manifest configures it, on a free port, asked what the kubelet asks.
    const running = await startService(t, { ...env, PORT: '0', METRICS_ADDR: '127.0.0.1:0' }, { addOns })
    const status = async (p: string) => {
      const res = await fetch(`${running.url}${p}`)
      await res.arrayBuffer()
      return res.status
    }
    assert.equal(await status(path('startup')), 200)
    assert.equal(await status(path('liveness')), 200)
    assert.equal(await status(path('readiness')), 200)
    running.events.emit('SIGTERM', 'SIGTERM')
    await running.waitForLog((line) => line.msg === 'shutdown started')
    assert.equal(await status(path('readiness')), 503, 'readiness fails while draining, taking the pod out of rotation')
    assert.equal(
      await status(path('liveness')),
      200,
      'liveness holds while draining, so the kubelet does not kill the pod',
    )
    running.events.emit('SIGTERM', 'SIGTERM') // a second signal ends the SHUTDOWN_DELAY at once
    await running.exited
  })

  it('let the drain finish before the kubelet sends SIGKILL', () => {
    assert.ok(config && pod?.terminationGracePeriodSeconds !== undefined)
    assert.ok(config.shutdownDelayMs > 0, 'SHUTDOWN_DELAY covers the time proxies take to drop the pod')
    const needed = config.shutdownDelayMs + config.shutdownTimeoutMs + exitMarginMs
    const graceMs = pod.terminationGracePeriodSeconds * 1000
    assert.ok(needed < graceMs, `${needed} ms needed, the grace period is ${graceMs} ms`)
  })

  it("run as the image's non-root user, read-only, without privileges or capabilities", () => {
    const dockerUser = /^USER (\d+):(\d+)$/m.exec(readFileSync(new URL('Dockerfile', root), 'utf8'))
    assert.ok(dockerUser, 'the Dockerfile names a numeric USER uid:gid')
    assert.equal(pod?.securityContext?.runAsNonRoot, true)
    assert.equal(pod.securityContext.runAsUser, Number(dockerUser[1]))
    assert.equal(pod.securityContext.runAsGroup, Number(dockerUser[2]))
    assert.notEqual(pod.securityContext.runAsUser, 0)
    assert.equal(pod.securityContext.seccompProfile?.type, 'RuntimeDefault')
    const context = container?.securityContext
    assert.equal(context?.allowPrivilegeEscalation, false)
    assert.equal(context.readOnlyRootFilesystem, true)
    assert.notEqual(context.privileged, true)
    assert.notEqual(context.runAsNonRoot, false)
    assert.deepEqual(context.capabilities, { drop: ['ALL'] })
  })

  it('request and limit CPU and memory', () => {
    const { requests, limits } = container?.resources ?? {}
    for (const resource of ['cpu', 'memory']) {
      assert.ok(requests?.[resource], `requests.${resource}`)
      assert.ok(limits?.[resource], `limits.${resource}`)
    }
  })

  it('roll out and drain nodes without losing capacity', () => {
    const spec = deployment?.spec
    assert.ok((spec?.replicas ?? 1) >= 2, 'two replicas or more, so one can go')
    assert.equal(spec?.strategy?.type, 'RollingUpdate')
    assert.equal(spec.strategy.rollingUpdate?.maxUnavailable, 0)
    assert.ok(Number(spec.strategy.rollingUpdate.maxSurge) >= 1, 'maxSurge lets a new pod start first')
    assert.equal(budget?.spec?.maxUnavailable, 1)
    const labels = spec.selector.matchLabels
    assert.deepEqual(service?.spec?.selector, labels)
    assert.deepEqual(budget.spec.selector?.matchLabels, labels)
    for (const [key, value] of Object.entries(labels ?? {})) assert.equal(spec.template.metadata?.labels?.[key], value)
  })
})
