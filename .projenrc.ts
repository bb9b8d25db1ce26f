import { awscdk, javascript, JsonFile } from 'projen';

const project = new awscdk.AwsCdkConstructLibrary({
  name: 'cdk-ip-lockdown',
  description:
    'Lock the EC2 instance metadata service (or any IP) to named OS users with iptables/nftables owner rules, applied through UserData and an SSM association.',
  author: 'cdk-ip-lockdown contributors',
  authorAddress: 'maintainers@cdk-ip-lockdown.dev',
  repositoryUrl: 'https://github.com/cdk-ip-lockdown/cdk-ip-lockdown.git',
  license: 'Apache-2.0',
  keywords: ['cdk', 'awscdk', 'ec2', 'imds', 'metadata', 'iptables', 'nftables', 'security', 'ssm'],
  defaultReleaseBranch: 'main',
  packageManager: javascript.NodePackageManager.NPM,
  projenrcTs: true,

  // aws-cdk-lib 2.257.0 is the newest release whose cloud assembly the pinned
  // integ-runner (2.197.10) can read; newer ones fail with AssemblyVersionMismatch.
  cdkVersion: '2.257.0',
  jsiiVersion: '~6.0.0',
  minNodeVersion: '20.0.0',

  publishToPypi: {
    distName: 'cdk-ip-lockdown',
    module: 'cdk_ip_lockdown',
  },

  // Exact versions: the npm registry this project builds against is a partial
  // copy, and these are the versions known to be there and to work together.
  devDeps: [
    '@aws-cdk/integ-runner@2.197.10',
    '@aws-cdk/integ-tests-alpha@2.245.0-alpha.0',
    'aws-cdk@2.1149.0',
    'cdk-nag@2.37.51',
  ],

  // The integ tasks are defined below: projen's integ-runner option only looks
  // in test/ and would add both integ packages as `latest`.
  integrationTestAutoDiscover: false,

  // The program is read at synth time from assets/ and ships in the package.
  npmignoreEnabled: true,
  gitignore: [
    '/cdk.out/',
    '/integ/cdk-integ.out.*/',
    '/integ/cdk.out/',
    '/bench/out/',
    '/dist-python/',
    '.tmp/',
    '/.jsii.tabl.json',
  ],

  github: false,
  release: false,
  depsUpgrade: false,
  buildWorkflow: false,
  pullRequestTemplate: false,

  jestOptions: {
    // --ci: a missing snapshot fails the run instead of being written silently.
    updateSnapshot: javascript.UpdateSnapshot.NEVER,
    jestConfig: {
      // Real-kernel tests start namespaces, servers and chroots; a slow CI
      // machine needs more than jest's 5 s default.
      testTimeout: 180_000,
      maxWorkers: 2,
      collectCoverage: false,
    },
  },
});

// Every task runs with these, so no tool started by a task tries to reach an
// instance metadata service, phones home, or prints the Node 20 banner of jsii.
project.tasks.addEnvironment('AWS_EC2_METADATA_DISABLED', 'true');
project.tasks.addEnvironment('CDK_DISABLE_CLI_TELEMETRY', 'true');
project.tasks.addEnvironment('CDK_DISABLE_VERSION_CHECK', 'true');
project.tasks.addEnvironment('JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION', '20');

project.npmignore?.addPatterns(
  '/integ/',
  '/bench/',
  '/.ci/',
  '/scripts/',
  '/rosetta/',
  'cdk.out/',
  '/cdk.json',
  '/dist-python/',
  '/.tmp/',
  '/.jsii.tabl.json',
);
project.npmignore?.include('/assets/');

// --- Integration app (integ/) -------------------------------------------------

new JsonFile(project, 'integ/tsconfig.json', {
  obj: {
    extends: '../tsconfig.json',
    compilerOptions: {
      rootDir: '..',
      noEmit: true,
      // ts-node runs the integ app transpile-only, file by file.
      isolatedModules: true,
    },
    include: ['**/*.ts', '../src/**/*.ts'],
    exclude: ['node_modules', '**/*.snapshot/**', 'cdk-integ.out.*/**'],
  },
});
project.eslint?.addLintPattern('integ');
project.eslint?.allowDevDeps('integ/**');

// ts-node type-checking an integ app took about 48 s on a 2-core machine, and
// transpile-only about 10 s, so tsc type-checks integ/ once up front instead.
const integApp = 'node -r ts-node/register/transpile-only {filePath}';
const integEnv = { TS_NODE_PROJECT: '$(realpath integ/tsconfig.json)' };

const integ = project.addTask('integ', {
  description: 'Check the integ app against its committed snapshot (no deploy, no AWS credentials)',
  env: integEnv,
  receiveArgs: true,
});
integ.exec('tsc --noEmit -p integ/tsconfig.json');
integ.exec(`integ-runner --directory integ --language typescript --app "${integApp}" $@`, { receiveArgs: true });

const integUpdate = project.addTask('integ:update', {
  description: 'Rewrite the integ snapshot from the current code without deploying',
  env: integEnv,
  receiveArgs: true,
});
integUpdate.exec('tsc --noEmit -p integ/tsconfig.json');
integUpdate.exec(
  `integ-runner --directory integ --language typescript --app "${integApp}" --dry-run --update-on-failed $@`,
  { receiveArgs: true },
);

// The example app is the integ app, synthesized by the real cdk CLI through the
// root cdk.json into cdk.out.
project.addTask('synth:example', {
  description: 'Synthesize the example app (integ/integ.ip-lockdown.ts) into cdk.out with the cdk CLI',
  exec: 'cdk synth --quiet --no-notices',
});

// --- Checks that run in `test` --------------------------------------------------

const shellcheck = project.addTask('shellcheck', {
  description: 'Lint the on-instance program and the project scripts with shellcheck',
});
// The program runs under dash on Debian and Ubuntu, so it is checked as plain sh.
shellcheck.exec('shellcheck --shell=sh assets/ip-lockdown.sh');
shellcheck.exec("find scripts .ci -type f ! -name '*.js' -exec shellcheck {} +");
shellcheck.exec('shellcheck bench/run', { condition: 'test -e bench/run' });

// CDK apps without an outdir, and the sandboxes of the real-kernel tests, make
// temporary directories. Pointing TMPDIR into the project keeps them out of the
// machine's /tmp; each run starts by removing what the last one left.
// projen evaluates a value only when all of it is one $(...) command.
project.testTask.env('TMPDIR', '$(realpath -m .tmp/test)');
project.testTask.prependExec('rm -rf .tmp/test && mkdir -p .tmp/test');
project.testTask.spawn(shellcheck);
project.testTask.spawn(integ);

// README examples must compile against the real API (rosetta's strict mode fails
// the build otherwise), and each hand-written Python example must equal
// rosetta's translation of the TypeScript example before it.
const rosetta = project.addTask('rosetta', {
  description: 'Compile the README examples and translate them to Python with jsii-rosetta',
  exec: 'jsii-rosetta extract --strict',
});
rosetta.exec('node scripts/check-readme-python.js');
project.postCompileTask.spawn(rosetta);

// --- Packages -----------------------------------------------------------------

const packageJs = project.tasks.tryFind('package:js')!;
packageJs.exec('sh scripts/check-package js');

// jsii-pacmak's own Python build pip-installs setuptools, build and twine from
// PyPI. Generating the code only and building with Debian's python3-build and
// twine keeps packaging offline.
const packagePython = project.tasks.tryFind('package:python')!;
packagePython.reset('rm -rf dist/python .tmp/pacmak');
packagePython.exec('jsii-pacmak -v --target python --code-only --outdir .tmp/pacmak');
packagePython.exec('/usr/bin/python3 -m build --no-isolation --skip-dependency-check --outdir ../../../dist/python .', {
  cwd: '.tmp/pacmak/python',
});
packagePython.exec('/usr/bin/python3 -m twine check --strict dist/python/*');
packagePython.exec('sh scripts/check-package python');

// projen packages only the js target when CI is set; build both everywhere.
const packageTask = project.tasks.tryFind('package')!;
packageTask.reset();
packageTask.spawn(packageJs);
packageTask.spawn(packagePython);

// --- Benchmarks -----------------------------------------------------------------

project.addTask('bench', {
  description: 'Run the benchmarks: all, or `synth` or `kernel` only (results in bench/RESULTS.md)',
  exec: 'sh bench/run',
  receiveArgs: true,
});

project.synth();
