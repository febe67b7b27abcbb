// The tests' OpenID Connect provider: panva's certified oidc-provider with its own login form
// (devInteractions), PKCE required, RP-initiated and back-channel logout on. Started by
// tests/support/oidc.py as `node provider.mjs CONFIG.json`; CONFIG names the issuer, the port,
// the clients, the signing keys and the accounts file, which is read again at every lookup so a
// test can change an account's groups between two logins.
import { readFileSync } from 'node:fs';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const accounts = () => JSON.parse(readFileSync(config.accounts_file, 'utf8'));

const provider = new Provider(config.issuer, {
  clients: config.clients,
  jwks: { keys: config.signing_keys },
  cookies: { keys: [config.cookie_key] },
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name', 'given_name', 'family_name'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  features: {
    devInteractions: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  async findAccount(ctx, sub) {
    const account = accounts()[sub];
    if (!account) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { sub, ...account.claims };
      },
    };
  },
  // The portal is a first-party client: no consent screen, the requested scopes are granted.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    const grant = grantId ? await ctx.oidc.provider.Grant.find(grantId)
      : new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid profile email groups');
    await grant.save();
    return grant;
  },
  // The provider guards its outgoing requests (back-channel logout) against loopback and other
  // special-use addresses; the portal under test lives on loopback, so the guard is off here.
  fetch(url, options) {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
  ttl: { Session: 3600, Grant: 3600, Interaction: 600, AccessToken: 600, AuthorizationCode: 60, IdToken: 600 },
});
provider.proxy = false;
for (const event of ['end_session.error', 'server_error', 'backchannel.error', 'grant.error', 'authorization.error']) {
  provider.on(event, (...args) => {
    const error = args.find((arg) => arg instanceof Error);
    console.error(event, error?.message, error?.error_description || '', error?.cause?.message || '');
  });
}
provider.on('backchannel.success', () => console.log('backchannel.success'));

provider.listen(config.port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${config.issuer}`);
});
