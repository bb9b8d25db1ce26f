import { awscdk, javascript } from 'projen';

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

  devDeps: [
    '@aws-cdk/integ-runner@2.197.10',
    '@aws-cdk/integ-tests-alpha@2.245.0-alpha.0',
    'aws-cdk@2.1149.0',
    'cdk-nag@2.37.51',
  ],

  // The program is read at synth time from assets/ and ships in the package.
  npmignoreEnabled: true,
  gitignore: ['/cdk.out/', '/integ/cdk.out/', '/bench/out/', '/dist-python/', '.tmp/'],

  github: false,
  release: false,
  depsUpgrade: false,
  buildWorkflow: false,
  pullRequestTemplate: false,

  jestOptions: {
    jestConfig: {
      // Real-kernel tests start namespaces, servers and chroots; a slow CI
      // machine needs more than jest's 5 s default.
      testTimeout: 180_000,
      maxWorkers: 2,
      collectCoverage: false,
    },
  },
});

project.npmignore?.addPatterns('/integ/', '/bench/', '/.ci/', '/scripts/', 'cdk.out/', '/dist-python/');
project.npmignore?.include('/assets/');

project.synth();
